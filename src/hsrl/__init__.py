"""hsrl: Hierarchical Semantic RL for slate recommendation over Semantic IDs.

Data flows one way: data -> simulator -> sid -> agents -> train/eval -> serve.
"""

__version__ = "0.1.0"
