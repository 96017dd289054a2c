"""Entry point: qamc (see README). Run directly or under torchrun:

python main_qamc_mlm.py --config _args/<config>.json [--key value ...]
torchrun --nproc_per_node N main_qamc_mlm.py --config _args/<config>.json
"""

from lib.tasks.run import run

if __name__ == "__main__":
    run("qamc")
