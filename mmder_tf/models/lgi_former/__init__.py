"""MAE-DFER's LGI-Former encoder (local-global interaction in token regions): backbone, layers, presets, conversion."""
