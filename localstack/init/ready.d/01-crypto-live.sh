#!/usr/bin/env bash
# LocalStack "ready" hook: creates exactly what `crypto-live provision` creates (same names, keys,
# TTL, secret), so the services find everything on their first start. Idempotent: a resource that
# already exists is left as it is, so the hook can run on every LocalStack start.
#
# The names come from the same environment variables the services read (same defaults).
# AWSCLI picks the CLI: `awslocal` inside the LocalStack container (it honours AWS_ENDPOINT_URL,
# which is how the tests point it at another emulator); `aws --endpoint-url URL` works too.
set -euo pipefail

AWSCLI=${AWSCLI:-awslocal}
REGION=${AWS_REGION:-${REGION:-ap-southeast-1}}
STREAM=${KINESIS_STREAM_NAME:-crypto-live-miniticker}
SHARDS=${KINESIS_SHARD_COUNT:-2}
HISTORY_TABLE=${DYNAMO_TABLE_NAME:-crypto-live-miniticker}
LATEST_TABLE=${DYNAMO_LATEST_TABLE_NAME:-crypto-live-ticker-latest}
BUCKET=${S3_BUCKET:-crypto-live-bucket}
SECRET=${BINANCE_WEBSOCKET_SECRET:-crypto-live.binance_ws}
ORDERS_TABLE=${DYNAMO_ORDERS_TABLE_NAME:-crypto-live-orders}
CANDLES_TABLE=${DYNAMO_CANDLES_TABLE_NAME:-crypto-live-candles}
API_SECRET=${BINANCE_API_SECRET:-crypto-live.binance_api}
# A placeholder, as provision writes it: the simulated exchange's pair.
API_SECRET_JSON='{"api_key": "crypto-live-sim-key", "api_secret": "crypto-live-sim-secret"}'
TTL_ATTRIBUTE=expires_at
# Byte for byte what provision stores: json.dumps({"streams": list(DEFAULT_STREAMS)}).
SECRET_JSON='{"streams": ["btcusdt@miniTicker", "ethusdt@miniTicker", "bnbusdt@miniTicker", "solusdt@miniTicker", "xrpusdt@miniTicker", "btcusdt@kline_1m", "ethusdt@kline_1m", "bnbusdt@kline_1m", "solusdt@kline_1m", "xrpusdt@kline_1m"]}'

export DISABLE_DEPRECATION_NOTICE=${DISABLE_DEPRECATION_NOTICE:-1}  # awslocal's banner

cli() {
    # shellcheck disable=SC2086 # AWSCLI may carry arguments, e.g. "aws --endpoint-url URL"
    $AWSCLI --region "$REGION" "$@"
}

log() { echo "crypto-live init: $*"; }

# create_unless_exists NAME ERROR_CODE COMMAND...: run COMMAND; an error whose text holds
# ERROR_CODE means NAME already exists (fine); any other error stops the hook.
create_unless_exists() {
    local name=$1 code=$2 err
    shift 2
    if err=$(cli "$@" 2>&1 >/dev/null); then
        log "created $name"
        return 0
    fi
    if [[ $err == *"$code"* ]]; then
        log "already there: $name"
        return 0
    fi
    echo "$err" >&2
    log "cannot create $name"
    return 1
}

# wait_for DESCRIPTION EXPECTED COMMAND...: poll COMMAND (text output) until it prints EXPECTED.
wait_for() {
    local what=$1 expected=$2 got=""
    shift 2
    for _ in $(seq 1 120); do
        got=$(cli "$@" --output text 2>/dev/null || true)
        [[ $got == "$expected" ]] && return 0
        sleep 0.5
    done
    log "$what is '$got' after 60 s, expected '$expected'"
    return 1
}

create_stream() {
    create_unless_exists "kinesis:$STREAM" ResourceInUseException \
        kinesis create-stream --stream-name "$STREAM" --shard-count "$SHARDS"
    wait_for "stream $STREAM" ACTIVE kinesis describe-stream-summary --stream-name "$STREAM" \
        --query StreamDescriptionSummary.StreamStatus
}

# create_table NAME ATTRIBUTE:KEYTYPE...: on-demand table, every key attribute a string.
create_table() {
    local name=$1 key attrs=() schema=()
    shift
    for key in "$@"; do  # name:KEYTYPE or name:KEYTYPE:N (a number key)
        local name_=${key%%:*} rest=${key#*:} type=S
        if [[ $rest == *:N ]]; then type=N; rest=${rest%:N}; fi
        attrs+=("AttributeName=$name_,AttributeType=$type")
        schema+=("AttributeName=$name_,KeyType=$rest")
    done
    create_unless_exists "dynamodb:$name" ResourceInUseException \
        dynamodb create-table --table-name "$name" --billing-mode PAY_PER_REQUEST \
        --attribute-definitions "${attrs[@]}" --key-schema "${schema[@]}"
    wait_for "table $name" ACTIVE dynamodb describe-table --table-name "$name" \
        --query Table.TableStatus
}

enable_ttl() {
    local table=$1 status
    status=$(cli dynamodb describe-time-to-live --table-name "$table" \
        --query TimeToLiveDescription.TimeToLiveStatus --output text)
    if [[ $status == ENABLED || $status == ENABLING ]]; then
        return 0
    fi
    cli dynamodb update-time-to-live --table-name "$table" \
        --time-to-live-specification "Enabled=true,AttributeName=$TTL_ATTRIBUTE" >/dev/null
    log "TTL on $table.$TTL_ATTRIBUTE enabled"
}

create_bucket() {
    local location=()
    if [[ $REGION != us-east-1 ]]; then
        location=(--create-bucket-configuration "LocationConstraint=$REGION")
    fi
    create_unless_exists "s3:$BUCKET" BucketAlreadyOwnedByYou \
        s3api create-bucket --bucket "$BUCKET" "${location[@]}"
}

create_secret() {
    create_unless_exists "secret:$1" ResourceExistsException \
        secretsmanager create-secret --name "$1" --secret-string "$2"
}

create_stream
create_table "$HISTORY_TABLE" stream_type:HASH iso_timestamp:RANGE
enable_ttl "$HISTORY_TABLE"
create_table "$LATEST_TABLE" symbol:HASH
create_table "$ORDERS_TABLE" symbol:HASH orderId:RANGE:N
create_table "$CANDLES_TABLE" symbol:HASH open_time:RANGE:N  # no TTL: candles are kept
create_bucket
create_secret "$SECRET" "$SECRET_JSON"
create_secret "$API_SECRET" "$API_SECRET_JSON"
log "ready"
