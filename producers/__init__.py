"""Floor 3: sources (crawlers, importers) and the publisher to ``twin.raw-documents``."""
