"""`python -m consumers.s3`: one worker of the s3 consumer group."""

import sys

from crypto_live.cli import main

sys.exit(main(["consume", "s3", *sys.argv[1:]]))
