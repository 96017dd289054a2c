"""Entry point: qamc (see README). Run directly or under torchrun:

python main_qamc_mlm.py --config _args/<config>.json [--key value ...]
python main_qamc_mlm.py --help   # every flag and config key
torchrun --nproc_per_node N main_qamc_mlm.py --config _args/<config>.json
"""

import sys

from lib.tasks.cli import main

if __name__ == "__main__":
    sys.exit(main("qamc"))
