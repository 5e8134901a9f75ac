"""Backbone presets by name: VideoMAE ViT sizes (constructor kwargs of VideoMAEBackbone).

Presets fix the architecture only; frame count and image size are arguments
(`VideoMAEBackbone.from_preset("large", num_frames=16, image_size=224)`).
"""

BACKBONE_PRESETS = {
    # Test scale: a 2-block, 64-wide encoder that runs in milliseconds on a CPU.
    "tiny": {"hidden_dim": 64, "depth": 2, "num_heads": 2},
    "small": {"hidden_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"hidden_dim": 768, "depth": 12, "num_heads": 12},
    # The paper's encoder: 303,858,688 parameters.
    "large": {"hidden_dim": 1024, "depth": 24, "num_heads": 16},
    "huge": {"hidden_dim": 1280, "depth": 32, "num_heads": 16},
}

# Heads of the standard ViT widths (and 512: MAE-DFER's and HiCMAE's released 8 x 64); conversion uses it
# when a checkpoint records neither args nor config. Any other width is refused without `num_heads=`.
HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16}


# Pre-training decoders by encoder size (VideoMAE's scripts: S 192/3, B 384/6, L 512/8, H 640/8 wide/heads;
# 4 blocks for S/B, 12 for L/H). Kwargs of `MAEDecoder`; `VideoMAEPretrainer.from_preset` pairs them by name.
DECODER_PRESETS = {
    "tiny": {"hidden_dim": 32, "depth": 2, "num_heads": 2},
    "small": {"hidden_dim": 192, "depth": 4, "num_heads": 3},
    "base": {"hidden_dim": 384, "depth": 4, "num_heads": 6},
    "large": {"hidden_dim": 512, "depth": 12, "num_heads": 8},
    "huge": {"hidden_dim": 640, "depth": 12, "num_heads": 8},
}

# Decoder heads by width, for checkpoints without args or config (640 has 8 heads of 80, not 10 of 64).
DECODER_HEADS_BY_WIDTH = {p["hidden_dim"]: p["num_heads"] for p in DECODER_PRESETS.values()}
