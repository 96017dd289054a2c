"""Entry point: captioning (see README). Run directly or under torchrun:

python main_caption.py --config _args/<config>.json [--key value ...]
torchrun --nproc_per_node N main_caption.py --config _args/<config>.json
"""

from lib.tasks.run import run

if __name__ == "__main__":
    run("captioning")
