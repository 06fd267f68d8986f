"""Content-Transfer-Encodings: base64, quoted-printable and uuencode, decoded leniently.

`binascii` does the work; the wrappers only make broken input (junk characters, missing padding, bad
uuencode lines) decode as far as it goes instead of raising.
"""

from __future__ import annotations

import binascii

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DELETE = bytes(b for b in range(256) if b not in _B64_ALPHABET)


def _b64_clean(data: bytes) -> bytes:
    """Keep the base64 alphabet up to the first '=' (RFC 2045 6.8: '=' marks the end of data)."""
    cut = data.find(b"=")
    if cut != -1:
        data = data[:cut]
    data = data.translate(None, _B64_DELETE)
    if len(data) % 4 == 1:  # a lone trailing sextet carries no whole byte
        data = data[:-1]
    return data


def b64_decode(data: bytes) -> bytes:
    """Tolerant base64: junk characters skipped, missing padding added, never raises."""
    clean = _b64_clean(data)
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except Exception:
        return b""


def _b64_size(data: bytes) -> int:
    """Decoded size of base64 without materialising the decoded bytes."""
    n = len(_b64_clean(data))
    return n * 3 // 4


def _qp_decode(data: bytes) -> bytes:
    try:
        return binascii.a2b_qp(data)
    except Exception:
        return data


def _uu_decode(data: bytes) -> bytes:
    """x-uuencode bodies (still sent by some old systems); bad lines are skipped."""
    out = []
    started = False
    for line in data.split(b"\n"):
        if not started:
            if line.startswith(b"begin"):
                started = True
            continue
        if line.strip() in (b"end", b"`end"):
            break
        if not line:
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except Exception:
            try:
                nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
                out.append(binascii.a2b_uu(line[:nbytes]))
            except Exception:
                continue
    return b"".join(out)


def decode_transfer(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        return b64_decode(body)
    if cte == "quoted-printable":
        return _qp_decode(body)
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uu_decode(body)
    return body


def decoded_size(body: bytes, cte: str) -> int:
    if cte == "base64":
        return _b64_size(body)
    if cte in ("7bit", "8bit", "binary", ""):
        return len(body)
    return len(decode_transfer(body, cte))

