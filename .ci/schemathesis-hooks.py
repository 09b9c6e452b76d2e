"""Schemathesis hooks for .ci/schemathesis.sh: raw bodies for the binary
media types that schemathesis has no serializer for (the upload types and
tus's PATCH body), and a check that an export really is a zip."""

import io
import zipfile

import schemathesis

RAW_TYPES = (
    "application/offset+octet-stream",
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/zip",
    "application/x-zip-compressed",
    "application/vnd.rar",
    "application/x-rar-compressed",
    "audio/mpeg",
    "audio/mp3",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
)


@schemathesis.serializer(*RAW_TYPES)
def raw_bytes(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", errors="ignore")


@schemathesis.deserializer("application/zip")
def zip_archive(ctx, response):
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"a damaged entry in the zip: {bad}")
        if "rooms.json" not in archive.namelist():
            raise ValueError("the zip has no rooms.json")
    # The document says `string`, format binary: the bytes as text.
    return response.content.decode("latin-1")
