"""How much a text reads like its author, measured: floor 2, for the trainer and serving.

``profile``: the stylometric profile and similarity; ``attribution``: an author classifier
against the shipped reference writers (``reference``); ``copying``: verbatim overlap with
the training text; ``repetition``: distinct n-grams; ``noise``: bootstrap tolerances.
"""
