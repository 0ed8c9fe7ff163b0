"""The HTTP service (`embed serve`): vectors and neighbours in the shapes clients already speak."""
