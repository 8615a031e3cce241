"""Stream processors and offline generators for streamwise."""
