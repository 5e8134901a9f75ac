"""HiCMAE (audio-visual masked autoencoder): visual and audio encoders, cross-modal fusion, hierarchical head; conversion."""
