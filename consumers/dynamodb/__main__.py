"""`python -m consumers.dynamodb`: one worker of the dynamodb consumer group."""

import sys

from crypto_live.cli import main

sys.exit(main(["consume", "dynamodb", *sys.argv[1:]]))
