"""HiCMAE presets by name (constructor kwargs of HiCMAEBackbone; classifier presets add the class count).

The released models (VoxCeleb2 pre-training, CREMA-D / MAFW fine-tuning) are
`avit_dim512_patch16_160_a256`: both encoders 512 wide with 8 heads, 10 blocks
each, 2 fusion layers with 8 heads, 16 frames of 160 x 160 and a 256 x 128
fbank; 80,792,602 parameters with the 6-class CREMA-D head.
"""

BACKBONE_PRESETS = {
    # Test scale: 64 wide, 2 + 2 blocks and 1 fusion layer; 16 frames of 64 px and 64 fbank frames.
    "hicmae-tiny": {
        "hidden_dim": 64, "depth": 2, "num_heads": 4, "audio_hidden_dim": 64, "audio_depth": 2, "audio_num_heads": 4,
        "fusion_depth": 1, "fusion_num_heads": 4, "num_frames": 16, "image_size": 64, "audio_length": 64,
    },
    "hicmae": {
        "hidden_dim": 512, "depth": 10, "num_heads": 8, "audio_hidden_dim": 512, "audio_depth": 10, "audio_num_heads": 8,
        "fusion_depth": 2, "fusion_num_heads": 8, "num_frames": 16, "image_size": 160, "audio_length": 256,
    },
}

# Released fine-tuned classifiers: backbone preset and class count (CREMA-D 6, MAFW 11), drop path 0.1.
CLASSIFIER_PRESETS = {
    "hicmae-crema-d": {"backbone": "hicmae", "num_classes": 6, "drop_path_rate": 0.1},
    "hicmae-mafw": {"backbone": "hicmae", "num_classes": 11, "drop_path_rate": 0.1},
}

# What the upstream registered model functions fix (a checkpoint's args name the function, not these values).
_RELEASED = {"num_heads": 8, "audio_num_heads": 8, "fusion_num_heads": 8, "image_size": 160, "audio_length": 256}
REGISTERED_MODELS = {
    "avit_dim512_patch16_160_a256": _RELEASED,
    "pretrain_hicmae_dim512_patch16_160_a256": _RELEASED,
}
