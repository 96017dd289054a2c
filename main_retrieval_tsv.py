"""Entry point: retrieval (see README). Run directly or under torchrun:

python main_retrieval_tsv.py --config _args/<config>.json [--key value ...]
python main_retrieval_tsv.py --help   # every flag and config key
torchrun --nproc_per_node N main_retrieval_tsv.py --config _args/<config>.json
"""

import sys

from lib.tasks.cli import main

if __name__ == "__main__":
    sys.exit(main("retrieval"))
