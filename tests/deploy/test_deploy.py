"""Deployment artefacts without a Docker engine: the compose files validate, the LocalStack init
hook leaves exactly what `provision` leaves, the CloudFormation template is cfn-lint clean and its
IAM policies grant no wildcard and nothing outside the stack. With a Docker engine, the whole
pipeline also runs against a real LocalStack container."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.app import KINDS, app_name, lease_table_name
from core.aws import AwsClients
from core.health import DEFAULT_PORTS
from core.settings import Settings, load_settings
from crypto_live.exchange.price_walk import generate_symbols
from crypto_live.lake.klines import DEFAULT_KLINES_PREFIX
from crypto_live.provision import DEFAULT_STREAMS, TTL_ATTRIBUTE, provision
from crypto_live.up import sim_streams
from producer.service import DEAD_LETTER_SOURCE
from tests.support.docker import docker_engine_problem, missing_images
from tests.support.emulator import free_port, reset_moto
from tests.support.pipeline import ServiceProcess, consumer_env, count_items, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SIM = ROOT / "docker-compose.sim.yml"
DOCKERFILE = ROOT / "Dockerfile"
HOOK = ROOT / "localstack" / "init" / "ready.d" / "01-crypto-live.sh"
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
LOCALSTACK_IMAGE = "localstack/localstack:4.14.0"
APP_SERVICES = ("provision", "producer", "consumer-dynamodb", "consumer-s3")
SCALABLE = ("producer", "consumer-dynamodb", "consumer-s3")


def _default(field: str) -> Any:
    """A setting's default, whatever the test environment sets."""
    return Settings.model_fields[field].default


# ---------------------------------------------------------------------------- docker compose


def _compose_command() -> list[str]:
    """The compose v2 plugin (what Docker users run) when there is one, else docker-compose."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    exe = shutil.which("docker-compose")
    if exe is not None:
        return [exe]
    pytest.skip(
        "no compose validator: neither docker-compose (Debian package docker-compose, "
        "installed by `make test` when run as root) nor the `docker compose` plugin"
    )


def _compose_config(*args: str) -> dict[str, Any]:
    """`docker-compose [args] config`: validated against the compose schema, then resolved."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [*_compose_command(), *args, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_compose_file_is_valid_and_wires_the_services() -> None:
    services = _compose_config("-f", str(COMPOSE))["services"]
    assert set(APP_SERVICES) | {"localstack"} <= set(services)

    localstack = services["localstack"]
    repository, _, tag = localstack["image"].partition(":")
    assert repository == "localstack/localstack"
    assert tag and tag != "latest"
    assert set(localstack["environment"]["SERVICES"].split(",")) == {
        "kinesis",
        "dynamodb",
        "s3",
        "secretsmanager",
    }
    assert "/_localstack/health" in " ".join(localstack["healthcheck"]["test"])
    assert any("/etc/localstack/init/ready.d" in str(volume) for volume in localstack["volumes"])

    for name in APP_SERVICES:
        service = services[name]
        env = service["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566", name
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("test", "test"), name
        assert "BINANCE_STREAM_URL" not in env, name  # live Binance unless docker-compose.sim.yml
    assert _depends(services["provision"]) == {"localstack": "service_healthy"}
    assert services["provision"]["command"] == ["provision"]
    assert services["provision"]["restart"] == "no"
    for name in SCALABLE:
        service = services[name]
        assert _depends(service) == {"provision": "service_completed_successfully"}, name
        assert "container_name" not in service, name  # --scale needs generated names
        assert not service.get("ports"), name  # and no fixed host ports
        assert service["healthcheck"]["test"] == ["CMD", "crypto-live", "healthcheck"], name
        assert service["environment"]["METRICS_PORT"] == str(DEFAULT_PORTS[name]), name
    assert services["consumer-s3"]["command"] == ["consume", "s3"]
    assert services["consumer-dynamodb"]["command"] == ["consume", "dynamodb"]


def test_compose_builds_the_app_image_once() -> None:
    # One service builds crypto-live:local; the others run that image and never pull it (a
    # build per service leaves untagged duplicates behind).
    if _compose_command()[-1] != "compose":
        pytest.skip("docker-compose v1 drops pull_policy when it merges files: needs compose v2")
    config = _compose_config("-f", str(COMPOSE), "-f", str(COMPOSE_SIM), "--profile", "sim")
    services = config["services"]
    app = [name for name, service in services.items() if name != "localstack"]
    assert [name for name in app if "build" in services[name]] == ["provision"]
    assert services["provision"]["pull_policy"] == "missing"  # v2's name for if_not_present
    for name in app:
        assert services[name]["image"] == "crypto-live:local", name
        if name != "provision":
            assert services[name]["pull_policy"] == "never", name


def test_compose_services_serve_metrics_on_their_own_default_ports() -> None:
    # Read without a compose validator (PyYAML resolves the anchors), so it runs everywhere:
    # with host networking the three services must not share a port, and each healthcheck
    # finds its own service's server (the port file) whatever port it fell back to.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    ports = {name: services[name]["environment"]["METRICS_PORT"] for name in SCALABLE}
    assert ports == {name: str(DEFAULT_PORTS[name]) for name in SCALABLE}
    assert len(set(ports.values())) == len(ports)
    for name in SCALABLE:
        assert services[name]["healthcheck"]["test"] == ["CMD", "crypto-live", "healthcheck"]
    image_env = " ".join(line for line in DOCKERFILE.read_text().splitlines() if "METRICS" in line)
    assert "METRICS_PORT_FILE=" in image_env
    assert "METRICS_PORT=" not in image_env  # unset: each service's default


def test_sim_profile_points_the_producer_at_the_simulated_exchange() -> None:
    config = _compose_config("-f", str(COMPOSE), "-f", str(COMPOSE_SIM), "--profile", "sim")
    services = config["services"]
    exchange = services["exchange"]
    assert exchange["profiles"] == ["sim"]
    assert exchange["command"][:3] == ["exchange", "--host", "0.0.0.0"]
    producer = services["producer"]
    assert producer["environment"]["BINANCE_STREAM_URL"] == "ws://exchange:9443/"
    symbols = int(exchange["command"][exchange["command"].index("--symbols") + 1])
    assert producer["environment"]["BINANCE_STREAMS"] == ",".join(
        sim_streams(generate_symbols(symbols))
    )
    assert _depends(producer) == {
        "provision": "service_completed_successfully",
        "exchange": "service_healthy",
    }


def test_dockerfile_is_slim_multi_stage_and_non_root() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    final = lines[lines.index(stages[-1]) :]
    assert any(re.fullmatch(r"USER \d+:\d+", line) and line != "USER 0:0" for line in final)
    assert not any("apt-get" in line or "pip install" in line for line in final)
    assert any(line.startswith("COPY --from=builder /opt/venv") for line in final)
    assert any(line.startswith("HEALTHCHECK") for line in final)
    assert any("/healthz" in line for line in final)
    assert 'ENTRYPOINT ["crypto-live"]' in final
    # The builder installs every dependency from a hashed lock file (`make lock`).
    assert any("pip install --require-hashes" in line and '"$lock"' in line for line in lines)


def _lock_pins(lock: Path) -> dict[str, str]:
    """name -> version of each requirement in a `uv pip compile --generate-hashes` file."""
    pins: dict[str, str] = {}
    text = lock.read_text()
    for block in re.split(r"\n(?=\S)", text):
        head = block.split(" ", 1)[0]
        if "==" not in head or head.startswith("#"):
            continue
        assert "--hash=sha256:" in block, f"{lock.name}: {head} has no hash"
        name, version = head.split("==")
        pins[_normal(name)] = version.split(";")[0]
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", ()), ("requirements-embedded.lock", ("embedded",))]
)
def test_lock_files_pin_the_pyproject_dependencies_with_hashes(
    lock: str, extras: tuple[str, ...]
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [
        r for e in extras for r in project["optional-dependencies"][e]
    ]
    pins = _lock_pins(ROOT / lock)
    for requirement in wanted:
        name, _, version = re.sub(r"\[.*?\]", "", requirement).partition("==")
        assert pins.get(_normal(name)) == version, f"{lock} is stale for {requirement}: make lock"
    assert ("moto" in pins) == ("embedded" in extras)  # the image's default lock has no moto
    assert len(pins) > len(wanted)  # transitive dependencies pinned too


# ---------------------------------------------------------------------------- init hook


@dataclass(frozen=True)
class Hook:
    """The ready.d script run with awslocal, pointed at an endpoint through AWS_ENDPOINT_URL."""

    env: dict[str, str]

    def run(self) -> str:
        result = subprocess.run(
            ["bash", str(HOOK)], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


def _hook(endpoint: str, settings: Settings) -> Hook:
    if importlib.util.find_spec("awscli") is None:
        pytest.skip("awscli is not installed (pip install awscli awscli-local)")
    bin_dir = str(Path(sys.executable).parent)
    path = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("awslocal", path=path) is None:
        pytest.skip("awslocal is not installed (pip install awscli-local)")
    return Hook(
        env={
            "PATH": path,
            "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_REGION": settings.aws_region,
            "KINESIS_STREAM_NAME": settings.kinesis_stream_name,
            "KINESIS_SHARD_COUNT": str(settings.kinesis_shard_count),
            "DYNAMO_TABLE_NAME": settings.dynamo_table_name,
            "DYNAMO_LATEST_TABLE_NAME": settings.dynamo_latest_table_name,
            "S3_BUCKET": settings.s3_bucket,
            "BINANCE_WEBSOCKET_SECRET": settings.binance_websocket_secret,
        }
    )


def _snapshot(aws: AwsClients) -> dict[str, Any]:
    """Every stream, table, bucket and secret of the account, as far as the services care."""
    streams = {}
    for name in aws.kinesis.list_streams()["StreamNames"]:
        summary = aws.kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        streams[name] = {
            "status": summary["StreamStatus"],
            "open_shards": summary["OpenShardCount"],
            "shards": len(aws.kinesis.list_shards(StreamName=name)["Shards"]),
            "mode": summary.get("StreamModeDetails", {}).get("StreamMode"),
            "retention_hours": summary["RetentionPeriodHours"],
        }
    tables = {}
    for name in aws.dynamodb.list_tables()["TableNames"]:
        table = aws.dynamodb.describe_table(TableName=name)["Table"]
        ttl = aws.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        tables[name] = {
            "status": table["TableStatus"],
            "keys": sorted((k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]),
            "attributes": sorted(
                (a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]
            ),
            "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
            "ttl": (ttl["TimeToLiveStatus"], ttl.get("AttributeName")),
        }
    buckets = {
        bucket["Name"]: aws.s3.get_bucket_location(Bucket=bucket["Name"])["LocationConstraint"]
        for bucket in aws.s3.list_buckets()["Buckets"]
    }
    secrets = {
        secret["Name"]: aws.secretsmanager.get_secret_value(SecretId=secret["Name"])["SecretString"]
        for secret in aws.secretsmanager.list_secrets()["SecretList"]
    }
    return {"streams": streams, "tables": tables, "buckets": buckets, "secrets": secrets}


def test_init_hook_creates_exactly_what_provision_creates(
    moto_endpoint: str, aws_settings: Settings, aws: AwsClients
) -> None:
    hook = _hook(moto_endpoint, aws_settings)
    first = hook.run()
    assert first.count("crypto-live init: created ") == 8, first  # with the candles table
    second = hook.run()  # idempotent: everything is there already
    assert second.count("crypto-live init: already there: ") == 8, second
    from_hook = _snapshot(aws)
    assert provision(aws_settings, aws).created == []  # provision finds all of it

    reset_moto(moto_endpoint)
    provision(aws_settings, aws)
    from_provision = _snapshot(aws)

    assert from_hook == from_provision
    # Not two empty accounts: the names, keys, TTL and secret the services rely on.
    assert from_hook["streams"][aws_settings.kinesis_stream_name]["open_shards"] == (
        aws_settings.kinesis_shard_count
    )
    assert from_hook["tables"][aws_settings.dynamo_table_name]["ttl"] == (
        "ENABLED",
        TTL_ATTRIBUTE,
    )
    assert from_hook["tables"][aws_settings.dynamo_latest_table_name]["keys"] == [
        ("symbol", "HASH")
    ]
    assert from_hook["tables"][aws_settings.dynamo_candles_table_name]["attributes"] == [
        ("open_time", "N"),
        ("symbol", "S"),
    ]
    assert from_hook["buckets"] == {aws_settings.s3_bucket: aws_settings.aws_region}
    secret = from_hook["secrets"][aws_settings.binance_websocket_secret]
    assert json.loads(secret) == {"streams": list(DEFAULT_STREAMS)}


# ---------------------------------------------------------------------------- CloudFormation


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader reading CloudFormation's short tags (!Ref, !Sub, ...) as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)
    return template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def test_cloudformation_template_is_cfn_lint_clean() -> None:
    if importlib.util.find_spec("cfnlint") is None:
        pytest.skip("cfn-lint is not installed (pip install cfn-lint)")
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE, ManualArgs(regions=["ap-southeast-1", "us-east-1"]))
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_template_creates_what_the_services_expect(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    stream = resources["Stream"]["Properties"]
    assert stream["Name"] == _default("kinesis_stream_name")
    assert stream["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}
    assert stream["StreamModeDetails"] == {"StreamMode": {"Ref": "StreamMode"}}

    tables = {
        r["Properties"]["TableName"]: r["Properties"]
        for r in _resources(template, "AWS::DynamoDB::Table").values()
    }
    leases = {lease_table_name(load_settings(consumer_app_name=None), kind) for kind in KINDS}
    data = {_default("dynamo_table_name"), _default("dynamo_latest_table_name"), ORDERS_TABLE}
    data.add(_default("dynamo_candles_table_name"))
    assert set(tables) == data | leases
    for name, table in tables.items():
        assert table["BillingMode"] == "PAY_PER_REQUEST", name
        if name in data:
            assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], name
    history = tables[_default("dynamo_table_name")]
    assert history["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert [(k["AttributeName"], k["KeyType"]) for k in history["KeySchema"]] == [
        ("stream_type", "HASH"),
        ("iso_timestamp", "RANGE"),
    ]

    bucket = resources["Bucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert any(
        rule.get("Prefix") == "errors/" for rule in bucket["LifecycleConfiguration"]["Rules"]
    )
    assert resources["BinanceSecret"]["Properties"]["Name"] == _default("binance_websocket_secret")
    assert template["Parameters"]["BinanceStreams"]["Default"].split(",") == list(DEFAULT_STREAMS)

    commands = {}
    served = {
        service["Properties"]["TaskDefinition"]["Ref"]
        for service in _resources(template, "AWS::ECS::Service").values()
    }
    for name, task in _resources(template, "AWS::ECS::TaskDefinition").items():
        (container,) = task["Properties"]["ContainerDefinitions"]
        commands[json.dumps(container["Command"])] = name
        if name in served:  # long-running services; the scheduled jobs exit when done
            assert "/healthz" in " ".join(container["HealthCheck"]["Command"]), name
        assert container["StopTimeout"] == 30, name
        assert container["LogConfiguration"]["LogDriver"] == "awslogs", name
        env = {item["Name"]: item["Value"] for item in container["Environment"]}
        if container["Command"][0] == "consume":
            kind = container["Command"][1]
            assert env["CONSUMER_APP_NAME"] == app_name(load_settings(), kind), name
    expected = [("producer",), ("consume", "dynamodb"), ("consume", "s3")]
    expected += SCHEDULED_COMMANDS.values()
    assert set(commands) == {json.dumps(list(command)) for command in expected}
    assert len(_resources(template, "AWS::ECS::Service")) == 3
    scaled = {
        target["Properties"]["ResourceId"]["Fn::Sub"].rsplit("${", 1)[1].split(".")[0]
        for target in _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    }
    assert scaled == {"ConsumerDynamoDbService", "ConsumerS3Service"}


def test_template_wires_the_candles_table_and_the_kline_prefix(template: dict[str, Any]) -> None:
    candles = template["Resources"]["DynamoCandlesTable"]["Properties"]
    assert candles["TableName"] == _default("dynamo_candles_table_name")
    assert [(k["AttributeName"], k["KeyType"]) for k in candles["KeySchema"]] == [
        ("symbol", "HASH"),
        ("open_time", "RANGE"),
    ]
    assert {"AttributeName": "open_time", "AttributeType": "N"} in candles["AttributeDefinitions"]
    assert "TimeToLiveSpecification" not in candles  # candles are kept
    envs = {}
    for task in _resources(template, "AWS::ECS::TaskDefinition").values():
        (container,) = task["Properties"]["ContainerDefinitions"]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        envs[json.dumps(container["Command"])] = env
    dynamodb_env = envs[json.dumps(["consume", "dynamodb"])]
    s3_env = envs[json.dumps(["consume", "s3"])]
    assert dynamodb_env["DYNAMO_CANDLES_TABLE_NAME"] == {"Ref": "DynamoCandlesTable"}
    assert s3_env["S3_KLINES_DIR_PATH"] == _default("s3_klines_dir_path")


# IAM: every Allow statement of every role. A resource must be a stack resource's ARN: GetAtt
# X.Arn, Ref of a type whose Ref is its ARN, or a Sub starting with one of those followed by
# nothing or a "/path". Anything else needs a documented entry here.
REF_IS_ARN = {
    "AWS::SecretsManager::Secret",
    "AWS::SNS::Topic",
    "AWS::IAM::ManagedPolicy",
    "AWS::ECS::TaskDefinition",  # the ARN of the revision the stack made
}
ECR_REPOSITORY = {
    "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:"
    "repository/${EcrRepositoryName}"
}
DOCUMENTED_EXCEPTIONS: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("ExecutionRole", json.dumps("*")): (
        frozenset({"ecr:GetAuthorizationToken"}),
        "GetAuthorizationToken has no resource-level permissions; AWS requires Resource *",
    ),
    ("ExecutionRole", json.dumps(ECR_REPOSITORY, sort_keys=True)): (
        frozenset(
            {"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}
        ),
        "the image repository exists before the stack (the image is pushed first)",
    ),
}
_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(\.Arn)?\}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, statement) for every inline and attached policy of every role."""
    resources = template["Resources"]
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for statement in _as_list(policy["PolicyDocument"]["Statement"]):
                    yield name, statement
            for arn in props.get("ManagedPolicyArns", []):
                yield name, {"Effect": "Allow", "Action": "*", "Resource": arn}
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for role in props.get("Roles", []):
                role_name = role.get("Ref", json.dumps(role)) if isinstance(role, dict) else role
                for statement in _as_list(props["PolicyDocument"]["Statement"]):
                    yield role_name, statement


def _arn_resource(template: dict[str, Any], resource: Any) -> str | None:
    """The logical id of the stack resource whose ARN ``resource`` is, or None."""
    resources = template["Resources"]
    if not isinstance(resource, dict) or len(resource) != 1:
        return None
    ((kind, value),) = resource.items()
    if kind == "Fn::GetAtt":
        logical, attribute = value if isinstance(value, list) else value.split(".", 1)
        return logical if logical in resources and attribute == "Arn" else None
    if kind == "Ref":
        found = resources.get(value)
        return value if found is not None and found["Type"] in REF_IS_ARN else None
    if kind == "Fn::Sub" and isinstance(value, str):
        match = _SUB_REFERENCE.match(value)
        if match is None or match.group(1) not in resources:
            return None
        arn = {"Fn::GetAtt": [match.group(1), "Arn"]} if match.group(2) else {"Ref": match.group(1)}
        rest = value[match.end() :]
        if _arn_resource(template, arn) is None or not (rest == "" or rest.startswith("/")):
            return None
        return match.group(1)
    return None


def iam_violations(template: dict[str, Any]) -> list[str]:
    """Wildcard actions, and resources outside the stack that no documented exception covers."""
    problems: list[str] = []
    for role, statement in policy_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        problems += [
            f"{role}: {inverted} allows everything else"
            for inverted in ("NotAction", "NotResource")
            if inverted in statement
        ]
        actions = tuple(_as_list(statement.get("Action", [])))
        problems += [f"{role}: wildcard action {a!r}" for a in actions if "*" in a]
        for resource in _as_list(statement.get("Resource", [])):
            if _arn_resource(template, resource) is not None:
                continue
            key = (role, json.dumps(resource, sort_keys=True))
            allowed, _reason = DOCUMENTED_EXCEPTIONS.get(key, (frozenset(), ""))
            if not set(actions) <= allowed or not actions:
                problems.append(f"{role}: {list(actions)} on {key[1]} is outside the stack")
    return problems


def _grants(template: dict[str, Any], role: str) -> set[tuple[str, str]]:
    """(action, resource) a role is allowed, resources written as `Logical` or `Logical/path`."""
    grants = set()
    for name, statement in policy_statements(template):
        if name != role:
            continue
        for resource in _as_list(statement["Resource"]):
            logical = _arn_resource(template, resource)
            assert logical is not None, resource
            path = resource["Fn::Sub"].split("}", 1)[1] if "Fn::Sub" in resource else ""
            grants |= {(action, logical + path) for action in _as_list(statement["Action"])}
    return grants


def test_iam_policies_have_no_wildcards_and_stay_inside_the_stack(
    template: dict[str, Any],
) -> None:
    assert iam_violations(template) == []
    roles = _resources(template, "AWS::IAM::Role")
    for name, role in roles.items():
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        service = (
            "scheduler.amazonaws.com" if name == "SchedulerRole" else "ecs-tasks.amazonaws.com"
        )
        assert trust["Principal"] == {"Service": service}, name
        assert trust["Action"] == "sts:AssumeRole", name
        assert trust["Condition"] == {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        }
    task_roles = {
        task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        for task in _resources(template, "AWS::ECS::TaskDefinition").values()
    }
    # one role per service, one for the lake jobs, one for orders, one for candle repair
    assert len(task_roles) == 6


def test_each_task_role_reaches_only_its_own_resources(template: dict[str, Any]) -> None:
    read_stream = {
        (f"kinesis:{action}", "Stream")
        for action in ("GetRecords", "GetShardIterator", "ListShards", "DescribeStreamSummary")
    }

    def lease_actions(table: str) -> set[tuple[str, str]]:
        actions = ("CreateTable", "DescribeTable", "Scan", "PutItem", "UpdateItem")
        return {(f"dynamodb:{action}", table) for action in actions}

    jsonl = _default("s3_jsonl_dir_path")
    dynamodb_app, s3_app = (app_name(load_settings(consumer_app_name=None), k) for k in KINDS)
    assert _grants(template, "ProducerTaskRole") == {
        ("kinesis:PutRecords", "Stream"),
        ("kinesis:ListShards", "Stream"),
        ("kinesis:DescribeStreamSummary", "Stream"),
        ("secretsmanager:GetSecretValue", "BinanceSecret"),
        ("s3:PutObject", f"Bucket/errors/{DEAD_LETTER_SOURCE}/*"),
    }
    assert _grants(template, "ConsumerDynamoDbTaskRole") == read_stream | lease_actions(
        "DynamoDbLeaseTable"
    ) | {
        ("dynamodb:BatchWriteItem", "HistoryTable"),
        ("dynamodb:PutItem", "LatestTable"),
        ("dynamodb:BatchWriteItem", "DynamoCandlesTable"),
        ("s3:PutObject", f"Bucket/errors/{dynamodb_app}/*"),
    }
    assert _grants(template, "ConsumerS3TaskRole") == read_stream | lease_actions(
        "S3LeaseTable"
    ) | {
        ("s3:PutObject", f"Bucket/{jsonl}/*"),
        ("s3:PutObject", f"Bucket/{_default('s3_klines_dir_path')}/*"),
        ("s3:PutObject", f"Bucket/errors/{s3_app}/*"),
    }


def test_scheduled_jobs_roles_reach_only_their_own_resources(template: dict[str, Any]) -> None:
    outputs = ("parquet", "candles_1m", "reports", "meta/manifests")
    jsonl = _default("s3_jsonl_dir_path")
    klines = DEFAULT_KLINES_PREFIX  # `lake candles` reads the raw kline lake too
    assert _grants(template, "LakeTaskRole") == {
        ("s3:ListBucket", "Bucket"),
        *{("s3:GetObject", f"Bucket/{prefix}/*") for prefix in (jsonl, klines, *outputs)},
        *{(f"s3:{verb}Object", f"Bucket/{p}/*") for p in outputs for verb in ("Put", "Delete")},
    }
    assert _grants(template, "OrdersTaskRole") == {
        ("secretsmanager:GetSecretValue", "BinanceApiSecret"),
        ("dynamodb:PutItem", "OrdersTable"),
        ("s3:ListBucket", "Bucket"),
        ("s3:GetObject", "Bucket/orders/*"),
        ("s3:PutObject", "Bucket/orders/*"),
    }
    assert _grants(template, "CandlesRepairTaskRole") == {
        ("secretsmanager:GetSecretValue", "BinanceSecret"),  # the subscribed kline streams
        ("dynamodb:Query", "DynamoCandlesTable"),
        ("kinesis:PutRecords", "Stream"),
        ("kinesis:ListShards", "Stream"),
        ("kinesis:DescribeStreamSummary", "Stream"),
    }
    scheduled = {task for _, task in SCHEDULES.values()}
    passed = ("ExecutionRole", "LakeTaskRole", "OrdersTaskRole", "CandlesRepairTaskRole")
    assert _grants(template, "SchedulerRole") == {
        *{("ecs:RunTask", name) for name in scheduled},
        *{("iam:PassRole", role) for role in passed},
    }
    conditions = {
        _as_list(statement["Action"])[0]: statement.get("Condition")
        for role, statement in policy_statements(template)
        if role == "SchedulerRole"
    }
    assert conditions == {
        "ecs:RunTask": {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}},
        "iam:PassRole": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
    }


# schedule -> (expression, task definition); commands of those task definitions
SCHEDULES = {
    "LakeCompactSchedule": ("cron(5 * * * ? *)", "LakeCompactTaskDefinition"),
    "LakeCandlesSchedule": ("cron(20 * * * ? *)", "LakeCandlesTaskDefinition"),
    "LakeReportSchedule": ("cron(45 0 * * ? *)", "LakeReportTaskDefinition"),
    "OrdersSnapshotSchedule": ("rate(15 minutes)", "OrdersSnapshotTaskDefinition"),
    "CandlesRepairSchedule": ("cron(10 * * * ? *)", "CandlesRepairTaskDefinition"),
}
SCHEDULED_COMMANDS: dict[str, tuple[Any, ...]] = {
    "LakeCompactTaskDefinition": ("lake", "compact", "--no-progress"),
    "LakeCandlesTaskDefinition": ("lake", "candles", "--slack-hours", "25", "--no-progress"),
    "LakeReportTaskDefinition": ("lake", "report", "--no-progress"),
    "OrdersSnapshotTaskDefinition": (
        "orders", "snapshot", "--symbol", {"Ref": "OrdersSymbol"}, "--minutes", "15"
    ),
    "CandlesRepairTaskDefinition": ("candles", "gaps", "--repair", "--no-progress"),
}  # fmt: skip
ORDERS_TABLE = "crypto-live-orders"


def test_jobs_run_on_schedules_as_tasks_of_the_stack(template: dict[str, Any]) -> None:
    schedules = _resources(template, "AWS::Scheduler::Schedule")
    assert set(schedules) == set(SCHEDULES)
    services = next(iter(_resources(template, "AWS::ECS::Service").values()))
    network = services["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    tasks = template["Resources"]
    for name, schedule in schedules.items():
        props = schedule["Properties"]
        expression, task = SCHEDULES[name]
        assert props["ScheduleExpression"] == expression, name
        assert props["ScheduleExpressionTimezone"] == "UTC", name
        target = props["Target"]
        assert target["Arn"] == {"Fn::GetAtt": ["Cluster", "Arn"]}, name
        assert target["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}, name
        ecs = target["EcsParameters"]
        assert ecs["TaskDefinitionArn"] == {"Ref": task}, name
        assert ecs["LaunchType"] == "FARGATE" and ecs["TaskCount"] == 1, name
        assert ecs["NetworkConfiguration"]["AwsvpcConfiguration"] == network, name
        assert "Input" not in target  # the command is the task definition's own
        (container,) = tasks[task]["Properties"]["ContainerDefinitions"]
        assert tuple(container["Command"]) == SCHEDULED_COMMANDS[task], name
        assert container["Image"] == {"Ref": "ImageUri"}, name  # the services' image
        env = {item["Name"]: item["Value"] for item in container["Environment"]}
        assert env["S3_BUCKET"] == {"Ref": "Bucket"}, name
    # Each job looks back further than the gap between two runs, so a missed run is caught up.
    from crypto_live.commands.lake import DEFAULT_HOURS

    assert DEFAULT_HOURS >= 24


def _plant(template: dict[str, Any], role: str, statement: dict[str, Any]) -> dict[str, Any]:
    planted = copy.deepcopy(template)
    policy = planted["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"] = [*_as_list(policy["Statement"]), statement]
    return planted


HISTORY_ARN = {"Fn::GetAtt": ["HistoryTable", "Arn"]}


@pytest.mark.parametrize(
    ("role", "statement", "expected"),
    [
        ("ConsumerS3TaskRole", {"Action": "dynamodb:*", "Resource": HISTORY_ARN}, "wildcard"),
        ("ProducerTaskRole", {"Action": "*", "Resource": HISTORY_ARN}, "wildcard"),
        ("ProducerTaskRole", {"Action": "s3:Put*", "Resource": HISTORY_ARN}, "wildcard"),
        ("ProducerTaskRole", {"Action": "s3:PutObject", "Resource": "*"}, "outside the stack"),
        (
            "ProducerTaskRole",
            {"Action": "s3:PutObject", "Resource": "arn:aws:s3:::someone-elses-bucket/*"},
            "outside the stack",
        ),
        (
            "ProducerTaskRole",
            {"Action": "s3:PutObject", "Resource": {"Fn::Sub": "${Bucket.Arn}*"}},
            "outside the stack",
        ),
        (
            "ProducerTaskRole",
            {"Action": "kinesis:PutRecords", "Resource": {"Ref": "Stream"}},  # a name, not an ARN
            "outside the stack",
        ),
        (
            "ExecutionRole",  # an exception covers its actions only
            {"Action": "ecr:PutImage", "Resource": "*"},
            "outside the stack",
        ),
        (
            "ConsumerS3TaskRole",
            {"NotAction": "s3:DeleteObject", "Resource": HISTORY_ARN},
            "NotAction",
        ),
    ],
)
def test_iam_checker_catches_a_planted_violation(
    template: dict[str, Any], role: str, statement: dict[str, Any], expected: str
) -> None:
    planted = _plant(template, role, {"Effect": "Allow", **statement})
    problems = iam_violations(planted)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{role}: ")
    assert expected in problems[0]


def test_iam_checker_flags_aws_managed_policies(template: dict[str, Any]) -> None:
    planted = copy.deepcopy(template)
    managed = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    planted["Resources"]["ExecutionRole"]["Properties"]["ManagedPolicyArns"] = [managed]
    assert any("ExecutionRole: wildcard action" in p for p in iam_violations(planted))


# ---------------------------------------------------------------------------- LocalStack


def _init_completed(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/init/ready", timeout=5) as response:
            return bool(json.load(response).get("completed"))
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(600)
# testcontainers 4.15's own LocalStackContainer.start calls wait_for_logs with a string, which it
# deprecates itself: not ours to fix, and filterwarnings=error would fail the test on it.
@pytest.mark.filterwarnings("ignore:The wait_for_logs function:DeprecationWarning")
def test_full_pipeline_on_localstack_container(tmp_path: Path) -> None:
    problem = docker_engine_problem()
    if problem is not None:
        pytest.skip(f"no Docker engine for the LocalStack container: {problem}")
    if missing_images(LOCALSTACK_IMAGE):
        pytest.skip(f"image {LOCALSTACK_IMAGE} missing from the engine (no pull here)")
    from testcontainers.community.localstack import LocalStackContainer

    container = (
        LocalStackContainer(image=LOCALSTACK_IMAGE, region_name="ap-southeast-1")
        .with_services("kinesis", "dynamodb", "s3", "secretsmanager")
        .with_volume_mapping(str(HOOK.parent), "/etc/localstack/init/ready.d", "ro")
    )
    if os.environ.get("LOCALSTACK_AUTH_TOKEN"):
        container.with_env("LOCALSTACK_AUTH_TOKEN", os.environ["LOCALSTACK_AUTH_TOKEN"])
    with container:
        endpoint = container.get_url()
        wait_until(lambda: _init_completed(endpoint), timeout=120, interval=1)
        run_pipeline_against(endpoint, tmp_path)


def run_pipeline_against(endpoint: str, tmp_path: Path) -> None:
    """On a LocalStack whose init hook ran: provision finds everything, then the simulated
    exchange, the producer and both consumers move records into DynamoDB and S3."""
    settings = load_settings(aws_endpoint_url=endpoint)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": settings.aws_region}
    provisioned = subprocess.run(
        [sys.executable, "-m", "crypto_live.cli", "provision"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert provisioned.returncode == 0, provisioned.stderr
    assert "created: nothing" in provisioned.stdout  # the init hook made all of it

    port = free_port("127.0.0.1")
    services = [
        ServiceProcess(
            ["exchange", "--host", "127.0.0.1", "--port", str(port), "--rate", "5"],
            env,
            tmp_path / "exchange.log",
        ),
        ServiceProcess(
            ["producer"],
            {
                **env,
                "BINANCE_STREAM_URL": f"ws://127.0.0.1:{port}/",
                "BINANCE_STREAMS": "!miniTicker@arr",
            },
            tmp_path / "producer.log",
        ),
    ]
    batching = {
        "MAX_BATCH_TIMEOUT": "1",
        "BATCH_GRACE_MS": "500",
        "AWS_REGION": settings.aws_region,
    }
    services += [
        ServiceProcess(
            ["consume", kind], consumer_env(settings, **batching), tmp_path / f"{kind}.log"
        )
        for kind in KINDS
    ]
    clients = AwsClients(settings)
    try:
        wait_until(lambda: count_items(clients, settings.dynamo_table_name) > 0, timeout=180)
        wait_until(
            lambda: (
                clients.s3.list_objects_v2(
                    Bucket=settings.s3_bucket, Prefix=f"{settings.s3_jsonl_dir_path}/"
                )["KeyCount"]
                > 0
            ),
            timeout=180,
        )
    finally:
        codes = [service.terminate(timeout=60) for service in reversed(services)]
        clients.close()
    assert codes == [0, 0, 0, 0], [s.log_path.read_text()[-2000:] for s in services]
