"""The Athena catalog of deploy/cloudformation.yaml against what the lake jobs really write.

The jobs run on a small data set in moto (raw miniTicker and kline JSONL in the S3 consumer's
own format, then compact, candles, report); every object under each Glue table's location is
then checked: its key matches the table's ``storage.location.template`` with values its partition
projection allows, its columns and types are the table's (Parquet read as a pyarrow dataset
with hive partitioning, raw JSONL line by line), and a column also present as a partition key
holds the key's value.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumers.s3.format import JsonlGzipFormat, jsonl_line
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.lake.arrow import pa, pq
from crypto_live.lake.jobs.candles import run_candles
from crypto_live.lake.jobs.compact import run_compact
from crypto_live.lake.jobs.report import run_report
from crypto_live.lake.klines import DEFAULT_KLINES_PREFIX
from crypto_live.lake.layout import orders_keys, raw_folder
from crypto_live.lake.parquet import to_parquet
from crypto_live.lake.store import S3LakeStore
from crypto_live.provision import provision
from schemas.record import FIELD_ORDER, iso_timestamp
from tests.crypto_live.lake.kline_records import gz_lines, kline
from tests.deploy.test_deploy import load_template

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MS_PER_HOUR = 3_600_000
H0 = 1_795_392_000_000 // MS_PER_HOUR - 2  # 2026-11-22T22: the data crosses a midnight
HOURS = range(H0, H0 + 4)
EVERY_S = 20
RAW_PREFIX = "batch_jsonl"
KLINES_PREFIX = DEFAULT_KLINES_PREFIX
ARROW_TO_GLUE = {"string": "string", "int64": "bigint", "int32": "int", "date32[day]": "date"}
JSON_TO_GLUE = {str: "string", int: "bigint", float: "double", bool: "boolean"}
# The orders snapshot as the issue documents it, written here until its writer lands.
ORDERS_SCHEMA = pa.schema(
    [
        pa.field("Symbol", pa.string()),
        pa.field("OrderID", pa.int64()),
        pa.field("Price", pa.decimal128(38, 8)),
        pa.field("OrigQty", pa.decimal128(38, 8)),
        pa.field("ExecutedQty", pa.decimal128(38, 8)),
        pa.field("status", pa.string()),
        pa.field("type", pa.string()),
        pa.field("side", pa.string()),
    ]
)


def glue_type(arrow_type: Any) -> str:
    if pa.types.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    return ARROW_TO_GLUE[str(arrow_type)]


# -- the template's tables, resolved for one bucket -----------------------------------------


def _resolve(value: Any, params: dict[str, Any]) -> Any:
    """Ref, Sub and Join of the Glue tables' properties, with parameters at their defaults."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "Ref":
            return params[arg]
        if kind == "Fn::Sub":
            return re.sub(r"\$\{(!?)([A-Za-z0-9:.]+)\}", lambda m: _sub(m, params), arg)
        if kind == "Fn::Join":
            separator, parts = arg
            return separator.join(_resolve(parts, params))
    if isinstance(value, dict):
        return {k: _resolve(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, params) for v in value]
    return value


def _sub(match: re.Match[str], params: dict[str, Any]) -> str:
    literal, name = match.groups()
    return "${" + name + "}" if literal else str(params[name])


def glue_tables(bucket: str) -> dict[str, dict[str, Any]]:
    """Table name -> TableInput of every AWS::Glue::Table, resolved."""
    template = load_template()
    params: dict[str, Any] = {
        name: spec.get("Default") for name, spec in template["Parameters"].items()
    }
    params["LakeSymbols"] = params["LakeSymbols"].split(",")
    params |= {"Bucket": bucket, "AWS::AccountId": "123456789012"}
    tables = {}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Glue::Table":
            table = _resolve(resource["Properties"]["TableInput"], params)
            tables[table["Name"]] = table
    return tables


def _projection_pattern(name: str, parameters: dict[str, str]) -> str:
    kind = parameters[f"projection.{name}.type"]
    if kind == "enum":
        values = parameters[f"projection.{name}.values"].split(",")
        return "|".join(re.escape(v) for v in values)
    if kind == "integer":
        digits = int(parameters[f"projection.{name}.digits"])
        return rf"\d{{{digits}}}"
    assert kind == "date" and parameters[f"projection.{name}.format"] == "yyyy-MM-dd"
    return r"\d{4}-\d{2}-\d{2}"


def _in_range(name: str, value: str, parameters: dict[str, str]) -> bool:
    kind = parameters[f"projection.{name}.type"]
    if kind == "enum":
        return True  # the pattern is the list
    low, high = parameters[f"projection.{name}.range"].split(",")
    if kind == "integer":
        return int(low) <= int(value) <= int(high)
    today = datetime.now(UTC).date()
    first, last = (today if v == "NOW" else date.fromisoformat(v) for v in (low, high))
    return first <= date.fromisoformat(value) <= last


def key_matcher(table: dict[str, Any], bucket: str) -> re.Pattern[str]:
    """The table's location template as a regex over object keys (a file directly under it)."""
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    template = parameters["storage.location.template"]
    prefix = f"s3://{bucket}/"
    assert template.startswith(table["StorageDescriptor"]["Location"]), template
    keys = [key["Name"] for key in table["PartitionKeys"]]
    assert re.findall(r"\$\{(\w+)\}", template) == keys  # each key once, in key order
    pattern = re.escape(template.removeprefix(prefix))
    for name in keys:
        group = f"(?P<{name}>{_projection_pattern(name, parameters)})"
        pattern = pattern.replace(re.escape("${" + name + "}"), group)
    return re.compile(pattern + r"[^/]+")


# -- the lake's objects ----------------------------------------------------------------------


def raw_record(symbol: str, event_time: int, index: int) -> dict[str, Any]:
    price = Decimal(100 + index % 37) + Decimal(index % 9) / 8
    fields: dict[str, Any] = {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{price:.8f}",
        "open_price": "100.00000000",
        "high_price": "200.00000000",
        "low_price": "50.00000000",
        "base_volume": f"{Decimal(index) / 4:.8f}",
        "quote_volume": f"{Decimal(index) * 25:.8f}",
        "iso_timestamp": iso_timestamp(event_time),
        "received_at": event_time * 1000 + 7,
    }
    return {name: fields[name] for name in FIELD_ORDER}


def write_raw(aws: AwsClients, bucket: str, symbols: list[str]) -> int:
    """Each hour's records in one object of its folder, as the S3 consumer files them."""
    count = 0
    for hour in HOURS:
        rows = [
            raw_record(symbol, hour * MS_PER_HOUR + second * 1000, second // EVERY_S)
            for second in range(0, 3600, EVERY_S)
            for symbol in symbols
        ]
        aws.s3.put_object(
            Bucket=bucket,
            Key=f"{raw_folder(RAW_PREFIX, hour)}shardId-000000000000-{hour}-0.jsonl.gz",
            Body=JsonlGzipFormat().compress(b"".join(jsonl_line(row) for row in rows)),
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
        )
        count += len(rows)
    return count


def write_klines(aws: AwsClients, bucket: str, symbols: list[str]) -> int:
    """Closed klines of every third minute in the S3 consumer's kline layout (filed by the hour
    they arrive: a minute 59 in the next hour's folder); the other minutes stay approximated."""
    by_folder: dict[int, list[dict[str, Any]]] = {}
    for hour in HOURS:
        for minute in range(0, 60, 3 if hour % 2 else 59):  # 20, or 2 (00, 59), per hour
            open_time = hour * MS_PER_HOUR + minute * 60_000
            arrival = (open_time + 60_000) // MS_PER_HOUR
            for symbol in symbols:
                ohlc = ("100.5", "137", "99.25", "101")
                row = kline(symbol, open_time, ohlc, "2.5", "260", minute + 1)
                by_folder.setdefault(arrival, []).append(row)
    for folder, rows in by_folder.items():
        aws.s3.put_object(
            Bucket=bucket,
            Key=f"{raw_folder(KLINES_PREFIX, folder)}shardId-000000000001-{folder}-0.jsonl.gz",
            Body=gz_lines(rows),
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
        )
    return sum(len(rows) for rows in by_folder.values())


def write_orders(store: S3LakeStore, symbols: list[str]) -> int:
    """A snapshot of orders per symbol in the documented layout and columns."""
    day = date(2026, 11, 23)
    for symbol in symbols:
        rows = [
            {
                "Symbol": symbol,
                "OrderID": 1_000 + i,
                "Price": Decimal("65000.5"),
                "OrigQty": Decimal("0.002"),
                "ExecutedQty": Decimal("0.001") * (i % 3),
                "status": "FILLED",
                "type": "LIMIT",
                "side": "BUY" if i % 2 else "SELL",
            }
            for i in range(10)
        ]
        csv_key, parquet_key = orders_keys(symbol, day, f"orders-{day.isoformat()}")
        store.put(parquet_key, to_parquet(pa.Table.from_pylist(rows, ORDERS_SCHEMA)), "x")
        store.put(csv_key, b"Symbol,OrderID\n", "text/csv")  # must stay out of the table
    return 10 * len(symbols)


def mirror(aws: AwsClients, bucket: str, root: Path) -> list[str]:
    """Every object of the bucket into ``root``, key as path; the keys."""
    keys = []
    for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            path = root / item["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(aws.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            keys.append(item["Key"])
    return keys


@pytest.fixture
def lake(aws_settings: Settings, aws: AwsClients, tmp_path: Path) -> Iterator[dict[str, Any]]:
    provision(aws_settings, aws)
    bucket = aws_settings.s3_bucket
    tables = glue_tables(bucket)
    symbols = tables["candles_1m"]["Parameters"]["projection.symbol.values"].split(",")[:2]
    raw = write_raw(aws, bucket, symbols)
    klines = write_klines(aws, bucket, symbols)
    store = S3LakeStore(aws.s3, bucket)
    results = [run_compact(store, RAW_PREFIX, HOURS), run_candles(store, HOURS)]
    results += [run_report(store, date(2026, 11, 22)), run_report(store, date(2026, 11, 23))]
    orders = write_orders(store, symbols)
    root = tmp_path / "lake"
    keys = mirror(aws, bucket, root)
    yield {
        "bucket": bucket,
        "tables": tables,
        "root": root,
        "keys": keys,
        "rows": {"raw": raw, "klines": klines, "orders": orders},
        "results": results,
        "symbols": symbols,
    }


# -- the checks ------------------------------------------------------------------------------


def table_files(lake: dict[str, Any], name: str) -> dict[str, dict[str, str]]:
    """Key -> partition values of every object under the table's location, each matching its
    location template with values its projection allows."""
    table, bucket = lake["tables"][name], lake["bucket"]
    location = table["StorageDescriptor"]["Location"].removeprefix(f"s3://{bucket}/")
    matcher = key_matcher(table, bucket)
    files = {}
    for key in (k for k in lake["keys"] if k.startswith(location)):
        match = matcher.fullmatch(key)
        assert match is not None, f"{name}: {key} is not under {matcher.pattern}"
        values = match.groupdict()
        for partition, value in values.items():
            assert _in_range(partition, value, table["Parameters"]), (name, key, partition)
        files[key] = values
    assert files, f"{name}: the jobs wrote nothing under {location}"
    return files


def check_parquet_table(lake: dict[str, Any], name: str) -> int:
    """Columns and types of every file are the table's; returns the dataset's row count."""
    from pyarrow import dataset as ds  # type: ignore[import-untyped, unused-ignore]

    table = lake["tables"][name]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    partitions = [(k["Name"], k["Type"]) for k in table["PartitionKeys"]]
    partition_names = {key.lower() for key, _ in partitions}
    files = table_files(lake, name)
    rows = 0
    for key, values in files.items():
        schema = pq.read_schema(lake["root"] / key)
        in_file = [(f.name.lower(), glue_type(f.type)) for f in schema]
        assert [c for c in in_file if c[0] not in partition_names] == columns, (name, key)
        data = pq.read_table(lake["root"] / key)
        rows += data.num_rows
        for field in schema:  # a column also a partition key holds the key's value
            if field.name.lower() in partition_names:
                held = {str(v) for v in data[field.name].to_pylist()}
                assert held == {values[field.name.lower()]}, (name, key, field.name)
    assert all(kind == "string" for _, kind in partitions)
    location = table["StorageDescriptor"]["Location"].removeprefix(f"s3://{lake['bucket']}/")
    hive = pa.schema([(k, pa.string()) for k, _ in partitions])
    # As Athena sees it: the declared columns from the files, the partition keys from the keys.
    declared = [f for f in schema if f.name.lower() not in partition_names]
    dataset = ds.dataset(
        lake["root"] / location,
        schema=pa.schema([*declared, *hive]),
        format="parquet",
        partitioning=ds.partitioning(hive, flavor="hive"),
    )
    whole = dataset.to_table()
    assert whole.num_rows == rows
    assert {n.lower() for n in whole.schema.names} == {c for c, _ in columns} | partition_names
    return rows


def test_every_table_is_in_the_stack(lake: dict[str, Any]) -> None:
    assert set(lake["tables"]) == {
        "raw_miniticker",
        "miniticker",
        "candles_1m",
        "daily_report",
        "orders",
    }
    for table in lake["tables"].values():
        assert table["TableType"] == "EXTERNAL_TABLE"


def test_raw_table_reads_what_the_s3_consumer_writes(lake: dict[str, Any]) -> None:
    table = lake["tables"]["raw_miniticker"]
    descriptor = table["StorageDescriptor"]
    assert descriptor["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    columns = [(c["Name"], c["Type"]) for c in descriptor["Columns"]]
    files = table_files(lake, "raw_miniticker")
    assert len(files) == len(HOURS)
    lines = 0
    for key, values in files.items():
        assert key.endswith(".jsonl.gz")  # Athena picks gzip from the extension
        year, month, day, hour = (int(values[k]) for k in ("year", "month", "day", "hour"))
        when = datetime(year, month, day, hour, tzinfo=UTC)
        assert key.startswith(raw_folder(RAW_PREFIX, int(when.timestamp()) // 3600))
        for line in gzip.decompress((lake["root"] / key).read_bytes()).splitlines():
            record = json.loads(line)
            assert [(k, JSON_TO_GLUE[type(v)]) for k, v in record.items()] == columns
            lines += 1
    assert lines == lake["rows"]["raw"]


def test_miniticker_table_reads_the_compacted_parquet(lake: dict[str, Any]) -> None:
    compact = lake["results"][0]
    assert check_parquet_table(lake, "miniticker") == compact.rows_out == lake["rows"]["raw"]
    dates = {values["date"] for values in table_files(lake, "miniticker").values()}
    assert dates == {"2026-11-22", "2026-11-23"}


def test_candles_table_reads_the_candles(lake: dict[str, Any]) -> None:
    candles = lake["results"][1]
    rows = check_parquet_table(lake, "candles_1m")
    assert rows == candles.rows_out == 60 * len(HOURS) * len(lake["symbols"])
    files = table_files(lake, "candles_1m")
    data = pa.concat_tables([pq.read_table(lake["root"] / key) for key in sorted(files)])
    sources = data["source"].to_pylist()
    assert sources.count("kline") == lake["rows"]["klines"]
    assert sources.count("miniticker-approximation") == rows - lake["rows"]["klines"]
    known = [trades is not None for trades in data["trades"].to_pylist()]
    assert known == [source == "kline" for source in sources]  # unknown when approximated


def test_report_table_reads_the_reports_and_not_their_csv(lake: dict[str, Any]) -> None:
    assert check_parquet_table(lake, "daily_report") == 2 * len(lake["symbols"])
    assert any(key.startswith("reports/csv/") for key in lake["keys"])


def test_orders_table_reads_the_documented_orders_layout(lake: dict[str, Any]) -> None:
    assert check_parquet_table(lake, "orders") == lake["rows"]["orders"]


def test_a_file_outside_the_template_is_caught(lake: dict[str, Any]) -> None:
    lake["keys"].append("candles_1m/symbol=BTCUSDT/part-00.parquet")  # no date= folder
    with pytest.raises(AssertionError, match="is not under"):
        table_files(lake, "candles_1m")
