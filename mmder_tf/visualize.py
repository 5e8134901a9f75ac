"""`python -m mmder_tf.visualize` (mmder-visualize): draw the fused input of a clip for each strategy. The code lives in `mmder_tf.reports.visualize`."""
from mmder_tf.reports.visualize import main

if __name__ == "__main__":
    raise SystemExit(main())
