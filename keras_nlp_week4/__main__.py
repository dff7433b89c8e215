import sys

from keras_nlp_week4.cli import main

sys.exit(main())
