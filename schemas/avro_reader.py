"""A record reader compiled for one flat Avro schema: the consumers' decode without fastavro's
per-record dispatch (pure, no I/O).

``compile_reader`` generates one straight-line function per schema that reads the body of a
record written with that very schema (no resolution to another reader schema). It returns the
same dict as ``fastavro.schemaless_reader``, or None for anything it does not take for sure
(truncated or trailing bytes, a varint over 64 bits, a boolean byte other than 0 or 1, invalid
UTF-8), so the caller falls back to fastavro and keeps fastavro's errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

# Field types the compiled reader handles; any other schema keeps fastavro.
_FAST_TYPES: Final = frozenset({"string", "bytes", "long", "int", "boolean"})

Reader = Callable[[bytes, int], "dict[str, Any] | None"]

# Reads one zig-zag varint at ``pos`` into ``{out}``; the loop only for values over 6 bits.
_VARINT: Final = """\
        b = data[pos]
        pos += 1
        if b < 0x80:
            n = b
        else:
            n = b & 0x7F
            shift = 7
            while True:
                b = data[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    return None
        {out} = (n >> 1) ^ -(n & 1)"""


def compile_reader(parsed: Any) -> Reader | None:
    """``read(data, pos)``: the record whose Avro body starts at ``pos`` and ends exactly at the
    end of ``data``, for a record schema of string, bytes, long, int and boolean fields (else
    None); the function returns None where fastavro must decide (see the module docstring)."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields = parsed["fields"]
    if not all(isinstance(f["type"], str) and f["type"] in _FAST_TYPES for f in fields):
        return None
    body: list[str] = []
    for i, field in enumerate(fields):
        kind, value = field["type"], f"v{i}"
        if kind in ("long", "int"):
            body.append(_VARINT.format(out=value))
            if kind == "int":
                body.append(
                    f"        if not -0x80000000 <= {value} <= 0x7FFFFFFF:\n            return None"
                )
        elif kind == "boolean":
            body += [
                f"        {value} = data[pos]",
                "        pos += 1",
                f"        if {value} > 1:",
                "            return None",
                f"        {value} = {value} == 1",
            ]
        else:  # string, bytes: a length, then that many bytes
            body.append(_VARINT.format(out="size"))
            body += [
                "        end = pos + size",
                "        if size < 0 or end > last:",
                "            return None",
                f"        {value} = data[pos:end]" + (".decode()" if kind == "string" else ""),
                "        pos = end",
            ]
    items = ", ".join(f"{field['name']!r}: v{i}" for i, field in enumerate(fields))
    source = "\n".join(
        [
            "def read(data, pos):",
            "    last = len(data)",
            "    try:",
            *body,
            "    except (IndexError, UnicodeDecodeError):",
            "        return None",
            "    if pos != last:",
            "        return None",
            f"    return {{{items}}}",
        ]
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<avro reader {parsed['name']}>", "exec"), namespace)  # noqa: S102
    reader: Reader = namespace["read"]
    return reader
