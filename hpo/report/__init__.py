"""Reports of an optimization: the data (``data``), the plotly figures (``figures``) and
the files ``hpo-controller report`` writes (``files``). Imported lazily: plotly is loaded
only by the commands that draw."""
