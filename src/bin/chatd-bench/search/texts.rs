//! Message texts for `search`: chat lines from word lists in English,
//! Uzbek (Latin), Russian (Cyrillic) and Chinese, code-switched Uzbek and
//! Russian, and emoji, drawn with a seeded generator so a run can be
//! repeated. Common words come up more often than rare ones (each list is
//! ordered roughly by frequency), as in real chat. (rustfmt would put the
//! non-ASCII lists one word a line: it measures their width in bytes.)

use crate::random::XorShift;

pub const ENGLISH: &[&str] = &[
    "the", "you", "and", "for", "this", "that", "with", "are", "have", "will", "what", "when", "okay", "thanks",
    "please", "sorry", "good", "great", "tomorrow", "today", "meeting", "morning", "call", "later", "send", "check",
    "need", "done", "ready", "sure", "maybe", "project", "weekend", "coffee", "lunch", "dinner", "office", "team",
    "review", "update", "release", "deadline", "report", "document", "question", "answer", "problem", "schedule",
    "flight", "hotel", "birthday", "party", "football", "movie", "music", "weather", "traffic", "photo", "budget",
    "client", "design", "server", "invoice", "ticket", "evening", "happy", "busy", "again", "where", "think", "know",
    "look",
];

#[rustfmt::skip]
pub const UZBEK: &[&str] = &[
    "salom", "rahmat", "yaxshi", "ha", "yo'q", "bugun", "ertaga", "qalaysiz", "qalesan", "hozir", "keyin",
    "albatta", "mayli", "kerak", "bor", "juda", "ko'p", "ish", "ishlar", "uy", "choy", "non", "osh", "vaqt",
    "soat", "kecha", "uchrashuv", "do'stlar", "oila", "bola", "ona", "ota", "bozor", "pul", "so'm", "telefon",
    "qo'ng'iroq", "xabar", "hafta", "dam", "olish", "tushlik", "kechki", "ovqat", "xayrli", "tong",
    "tug'ilgan", "kun", "muborak", "maktab", "universitet", "o'qish", "loyiha", "hisobot", "savol", "javob",
    "Toshkent", "Samarqand", "Buxoro", "oʻzbek", "Oʻzbekiston", "g'alaba", "mashina", "yo'l", "kam",
];

#[rustfmt::skip]
pub const RUSSIAN: &[&str] = &[
    "да", "нет", "привет", "спасибо", "хорошо", "как", "дела", "что", "где", "когда", "сегодня", "завтра",
    "давай", "конечно", "можно", "нужно", "сейчас", "потом", "пожалуйста", "ладно", "отлично", "встреча",
    "работа", "проект", "отчёт", "вечером", "утром", "обед", "ужин", "кофе", "неделя", "выходные", "день",
    "рождения", "поздравляю", "звонок", "позвони", "напиши", "документ", "деньги", "вопрос", "ответ",
    "проблема", "готово", "почему", "погода", "дорога", "фото", "Ташкент", "Самарканд", "Москва", "вчера",
    "мы", "вы", "они", "тоже", "очень",
];

#[rustfmt::skip]
pub const CHINESE: &[&str] = &[
    "好的", "你好", "谢谢", "我们", "今天", "明天", "可以", "没问题", "已经", "需要", "时间", "工作",
    "会议", "下午", "上午", "晚上", "昨天", "你们", "他们", "为什么", "怎么样", "不客气", "对不起", "项目",
    "报告", "周末", "咖啡", "朋友", "电话", "文件", "问题", "回答", "准备", "吃饭", "天气", "生日快乐",
    "谢谢你", "星期天", "北京", "上海", "塔什干", "撒马尔罕",
];

pub const EMOJI: &[&str] =
    &["👍", "😂", "🙏", "❤️", "😊", "🎉", "🔥", "😅", "🤔", "✅", "😀", "🙂", "💪", "👋🏽", "🚀", "☕", "📎", "👨‍👩‍👧"];

/// The language of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    English,
    Uzbek,
    Russian,
    Chinese,
    /// Uzbek and Russian words in one line.
    Mixed,
    /// Emoji only.
    Emoji,
}

/// Share of lines per script, in percent (sums to 100).
const SHARES: [(Script, u64); 6] = [
    (Script::English, 32),
    (Script::Uzbek, 30),
    (Script::Russian, 20),
    (Script::Chinese, 10),
    (Script::Mixed, 6),
    (Script::Emoji, 2),
];

/// An index into a list of `len` where small indices are likelier (about
/// harmonic: the first word is several times as common as the middle one).
pub fn skewed(random: &mut XorShift, len: usize) -> usize {
    let bound = random.below(len as u64) + 1;
    random.below(bound) as usize
}

fn word<'a>(random: &mut XorShift, list: &[&'a str]) -> &'a str {
    list[skewed(random, list.len())]
}

pub fn pick_script(random: &mut XorShift) -> Script {
    let mut roll = random.below(100);
    for (script, share) in SHARES {
        if roll < share {
            return script;
        }
        roll -= share;
    }
    Script::English
}

/// One chat line: 1..=14 words of a script (Chinese without spaces), the
/// first letter sometimes capitalised, sometimes an ending mark, a quarter
/// of lines with emoji at the end.
pub fn message(random: &mut XorShift) -> String {
    let script = pick_script(random);
    let words = 1 + random.below(6) + random.below(9);
    let mut line = String::new();
    for n in 0..words {
        let next = match script {
            Script::English => word(random, ENGLISH),
            Script::Uzbek => word(random, UZBEK),
            Script::Russian => word(random, RUSSIAN),
            Script::Chinese => word(random, CHINESE),
            Script::Mixed if random.below(2) == 0 => word(random, UZBEK),
            Script::Mixed => word(random, RUSSIAN),
            Script::Emoji => word(random, EMOJI),
        };
        if n > 0 && script != Script::Chinese {
            line.push(' ');
        }
        if n == 0 && random.below(3) == 0 {
            line.extend(capitalised(next));
        } else {
            line.push_str(next);
        }
    }
    match random.below(8) {
        0 => line.push('?'),
        1 => line.push('!'),
        2 if script == Script::Chinese => line.push('。'),
        2 => line.push('.'),
        _ => {}
    }
    if script != Script::Emoji && random.below(4) == 0 {
        line.push(' ');
        for _ in 0..=random.below(3) {
            line.push_str(word(random, EMOJI));
        }
    }
    line
}

fn capitalised(word: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = word.chars();
    chars.next().into_iter().flat_map(char::to_uppercase).chain(chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_lines() {
        let lines = |seed| {
            let mut random = XorShift::new(seed);
            (0..50).map(|_| message(&mut random)).collect::<Vec<_>>()
        };
        assert_eq!(lines(5), lines(5));
        assert_ne!(lines(5), lines(6));
    }

    #[test]
    fn lines_are_never_empty_and_stay_short() {
        let mut random = XorShift::new(11);
        for _ in 0..10_000 {
            let line = message(&mut random);
            assert!(!line.trim().is_empty());
            assert!(line.chars().count() < 300, "{line}");
        }
    }

    #[test]
    fn every_script_shows_up_in_its_share() {
        let mut random = XorShift::new(3);
        let lines: Vec<String> = (0..20_000).map(|_| message(&mut random)).collect();
        let share = |test: &dyn Fn(char) -> bool| {
            lines.iter().filter(|l| l.chars().any(test)).count() as f64 / lines.len() as f64
        };
        let cyrillic = share(&|c| ('\u{0400}'..='\u{04FF}').contains(&c));
        let han = share(&|c| ('\u{4E00}'..='\u{9FFF}').contains(&c));
        let emoji = share(&|c| ('\u{1F300}'..='\u{1FAFF}').contains(&c));
        // Russian 20% plus about half of the mixed 6%.
        assert!((0.21..0.28).contains(&cyrillic), "{cyrillic}");
        assert!((0.08..0.12).contains(&han), "{han}");
        assert!((0.2..0.35).contains(&emoji), "{emoji}");
        assert!(lines.iter().any(|l| l.contains("oʻzbek") || l.contains("Oʻzbek")));
    }

    #[test]
    fn skewed_picks_favour_the_front_and_reach_the_end() {
        let mut random = XorShift::new(9);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[skewed(&mut random, 10)] += 1;
        }
        assert!(counts[0] > 2 * counts[5], "{counts:?}");
        assert!(counts[9] > 0);
        assert!(counts.windows(2).all(|pair| pair[0] >= pair[1]), "{counts:?}");
    }

    #[test]
    fn capitals_follow_each_script() {
        assert_eq!(capitalised("привет").collect::<String>(), "Привет");
        assert_eq!(capitalised("oʻzbek").collect::<String>(), "Oʻzbek");
        assert_eq!(capitalised("好的").collect::<String>(), "好的");
    }
}
