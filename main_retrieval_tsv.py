"""Entry point: retrieval (see README). Run directly or under torchrun:

python main_retrieval_tsv.py --config _args/<config>.json [--key value ...]
torchrun --nproc_per_node N main_retrieval_tsv.py --config _args/<config>.json
"""

from lib.tasks.run import run

if __name__ == "__main__":
    run("retrieval")
