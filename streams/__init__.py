"""Floor 3: the Bytewax feature dataflow: raw documents -> clean -> chunk -> embed -> stores."""
