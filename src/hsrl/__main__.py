"""``python -m hsrl`` (and ``torchrun ... -m hsrl ...``): the command line."""

from hsrl.cli import entry

if __name__ == "__main__":
    entry()
