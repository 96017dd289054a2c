"""Entry point: qaoe (see README). Run directly or under torchrun:

python main_qaoe_mlm.py --config _args/<config>.json [--key value ...]
python main_qaoe_mlm.py --help   # every flag and config key
torchrun --nproc_per_node N main_qaoe_mlm.py --config _args/<config>.json
"""

import sys

from lib.tasks.cli import main

if __name__ == "__main__":
    sys.exit(main("qaoe"))
