"""`python -m mmder_tf.predict` (mmder-predict): predict emotions of media files with an exported model. The code lives in `mmder_tf.serving.predict`."""
from mmder_tf.serving.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
