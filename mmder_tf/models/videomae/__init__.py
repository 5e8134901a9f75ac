"""VideoMAE ViT encoder: backbone, presets."""
