"""Every default of the project, in one place.

Plain constants, no side effects: edit them here, or override most of them per run with the
command-line flags of `fineturn.py`, `convert_tfrecord.py` and `validate_alexnet_on_imagenet.py`.
Model facts that come with the pretrained weights are not knobs: the input size (227) lives in
`netspec.py`, and the mean is the weights file's own (`weights_file.py`: ImageNet's per-channel
BGR mean, IMAGENET_MEAN_BGR, for bvlc_alexnet).

A training knob is a constant here and one declaration in `knobs.py` (its flag, help and role);
fineturn.py's parser, the run's Settings and settings.json follow from that declaration.
"""
import os

ROOT = os.path.dirname(os.path.abspath(__file__))

# --- paths -------------------------------------------------------------------------------------
IMAGE_DIR = os.path.join(ROOT, 'UCMerced_LandUse', 'Images')  # <class>/<image> folders to convert
RECORDS_DIR = os.path.join(ROOT, 'data')                      # TFRecords, labels.txt, split.csv
WEIGHTS_PATH = os.path.join(ROOT, 'weights', 'bvlc_alexnet.npz')  # from python -m caffe_to_npy
RUNS_DIR = os.path.join(ROOT, 'runs')
RUN_DIR = os.path.join(RUNS_DIR, 'alexnet-ucmerced')          # checkpoints, metrics, reports
# Frozen features, once per image, shared by every run, split and concurrent job on these weights.
# On a cluster, put it on the file system the jobs share.
FEATURE_STORE = os.path.join(RUNS_DIR, 'feature_store')
IMAGENET_CLASSES = os.path.join(ROOT, 'data', 'imagenet_classes.txt')  # 1000 names, Caffe order

# --- dataset conversion (convert_tfrecord.py) ---------------------------------------------------
SPLIT_RATIOS = (0.8, 0.1, 0.1)  # train, validation, test; stratified per class (the seed's split)
SPLIT_SEED = 42                 # shuffles each class's sorted file list before splitting
CONVERT_WORKERS = 0             # parallel decode/encode processes; 0 = one per CPU core

# --- which layers (fineturn.py) -----------------------------------------------------------------
# Two separate knobs. TRAIN_LAYERS get gradients (the optimiser's var_list); every other layer is
# frozen. SKIP_LAYERS are not loaded from the weights file and start from Caffe's fillers instead.
# Default: fine-tune fc6-fc8, keeping the pretrained fc6/fc7 and replacing the 1000-class fc8.
# The seed author's variant (fc6 and fc7 from random too) is SKIP_LAYERS = TRAIN_LAYERS.
TRAIN_LAYERS = ('fc6', 'fc7', 'fc8')
SKIP_LAYERS = ('fc8',)

# --- optimisation (the seed's recipe) ----------------------------------------------------------
BATCH_SIZE = 32
EPOCHS = 20
LEARNING_RATE = 1e-4        # plain SGD
LR_DECAY = 0.99             # learning rate multiplied by this once per epoch
WEIGHT_DECAY = 1e-3         # L2: WEIGHT_DECAY * sum(w**2)/2 over the trained layers' weights
# Per-layer learning-rate multipliers, Caffe's lr_mult, as {layer: (weights, biases)}; a layer
# not named here gets 1 and 1 (the seed's recipe: {}). Caffe's zoo fine-tuning recipes give the
# new last layer {'fc8': (10, 20)}. Flag: --lr-mult fc8=10 (biases then get twice: 20).
LR_MULT = {}
KEEP_PROB = 0.5             # dropout keep probability before fc7 and fc8 while training
FLIP = True                 # random up/down and left/right flips of training images
SEED = 42                   # graph-level TF seed and the order of training batches
KEEP_CHECKPOINTS = 5        # last N epoch checkpoints kept, and the best; 0 = keep all

# --- the classifier (fineturn.py) ---------------------------------------------------------------
# 'finetune' trains TRAIN_LAYERS; 'svm' is the frozen-feature baseline of the AID table: a linear
# SVM (scikit-learn's LinearSVC) on each image's SVM_LAYER after its ReLU, centre crop,
# L2-normalised, with C = SVM_C.
CLASSIFIER = 'finetune'
SVM_LAYER = 'fc7'
SVM_C = 1.0

# --- repeated random splits (fineturn.py --splits N) --------------------------------------------
# Each class's images split into train, validation and test, redrawn per split from --seed and
# the split's number. The papers' 80/20 with a validation part for model selection taken out of
# the 80 %; VAL = 0 is their plain train/test (the last epoch tested).
PROTOCOL_SPLIT_RATIOS = (0.7, 0.1, 0.2)

# --- speed (fineturn.py) ------------------------------------------------------------------------
USE_FEATURE_CACHE = True    # compute frozen layers once per image when exact (in FEATURE_STORE)
CACHE_RAM_GB = 4.0          # a run's frozen features above this size go to a memory-mapped file

# --- checking the weights (validate_alexnet_on_imagenet.py) -------------------------------------
TOP_K = 5
