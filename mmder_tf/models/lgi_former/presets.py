"""LGI-Former presets by name (constructor kwargs of LGIFormerBackbone).

Unlike the VideoMAE presets these fix the input geometry too: the region size
is counted in tubelets, so it only divides the token grid of the size it was
made for (override `num_frames` / `image_size` / `region_size` together).
"""

BACKBONE_PRESETS = {
    # Test scale: 2 blocks, 64 wide; regions of 2x2x2 tubelets divide any grid of even size.
    "mae-dfer-tiny": {
        "hidden_dim": 64, "depth": 2, "num_heads": 2, "region_size": (2, 2, 2), "num_frames": 16, "image_size": 64,
    },
    # MAE-DFER's released encoder (VoxCeleb2 pre-training; DFEW / FERV39k / MAFW fine-tuning): 8 regions of
    # 2 tubelet-frames x upper or lower half of the face; 84,878,343 parameters with a 7-class head.
    "mae-dfer": {
        "hidden_dim": 512, "depth": 16, "num_heads": 8, "region_size": (2, 5, 10), "num_frames": 16, "image_size": 160,
    },
}
