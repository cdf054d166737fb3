"""Task glue the scripts share: GLUE data, models, metrics and cards (`glue`); local image data sets (`data`)."""
