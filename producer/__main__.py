"""`python -m producer` runs the producer service, like `crypto-live producer`."""

import sys

from crypto_live.cli import main

sys.exit(main(["producer", *sys.argv[1:]]))
