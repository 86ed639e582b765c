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

# Varints of more bytes are not Avro longs (10 bytes hold 70 bits); fastavro decides on them.
_MAX_VARINT_BYTES: Final = 10


def _varint(out: str, indent: str) -> list[str]:
    """Lines reading the zig-zag varint at ``pos`` into ``out`` and moving ``pos`` past it:
    unrolled, one nested level per byte, so a long of 8 bytes (epoch µs) runs no loop."""
    lines = [f"{indent}b = data[pos]", f"{indent}if b < 0x80:", f"{indent}    n = b"]
    lines += [f"{indent}    pos += 1", f"{indent}else:", f"{indent}    n = b & 0x7F"]
    for i in range(1, _MAX_VARINT_BYTES):
        inner = indent + "    " * i
        lines += [f"{inner}b = data[pos + {i}]", f"{inner}if b < 0x80:"]
        lines += [f"{inner}    n |= b << {7 * i}", f"{inner}    pos += {i + 1}", f"{inner}else:"]
        lines.append(f"{inner}    n |= (b & 0x7F) << {7 * i}")
    lines.append(f"{indent}{'    ' * _MAX_VARINT_BYTES}return None")
    lines.append(f"{indent}{out} = (n >> 1) ^ -(n & 1)")
    return lines


def _sized(value: str, kind: str) -> list[str]:
    """Lines reading a string or bytes field: a length, then that many bytes. A length byte
    with neither bit 7 (more bytes) nor bit 0 (negative) set is the length of 0..63 bytes at
    once; anything else takes the general varint. A length past the end leaves ``pos`` past
    ``last`` (a slice never raises), which the final ``pos != last`` turns away."""
    decode = ".decode()" if kind == "string" else ""
    return [
        "        b = data[pos]",
        "        if not b & 0x81:",
        "            end = pos + 1 + (b >> 1)",
        f"            {value} = data[pos + 1 : end]{decode}",
        "        else:",
        *_varint("size", "            "),
        "            if size < 0:",
        "                return None",
        "            end = pos + size",
        f"            {value} = data[pos:end]{decode}",
        "        pos = end",
    ]


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
            body += _varint(value, "        ")
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
        else:  # string, bytes
            body += _sized(value, kind)
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
