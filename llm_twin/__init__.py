"""Floor 4: the ``llm-twin`` command. It wires the other packages together; no business logic."""
