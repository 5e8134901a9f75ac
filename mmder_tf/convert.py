"""`python -m mmder_tf.convert` (mmder-convert): convert a pre-trained checkpoint to Keras weights. The code lives in `mmder_tf.models.convert`."""
from mmder_tf.models.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
