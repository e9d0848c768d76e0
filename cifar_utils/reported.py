"""The original report's published numbers, kept in one place so every table cites the same figures.

Top-1 test error on CIFAR-10 in percent, one run per model, under the report's protocol (SGD lr 0.1,
momentum 0.9, weight decay 5e-4, batch 128, LR x0.5 on plateau, 200 epochs, pad-4 crop + flip).
"""

from __future__ import annotations

#: Chapter 1: the seven architectures.
ARCHITECTURE_ERRORS: dict[str, float] = {
    "resnet18": 4.89,
    "preact_resnet18": 5.12,
    "wrn28_10": 4.27,
    "resnext29_32x4d": 4.85,
    "densenet121": 4.78,
    "dpn26": 5.21,
    "dla": 5.02,
}

#: Chapter 2: the ablations.
ABLATION_ERRORS: dict[str, float] = {
    "resnet18": 4.89,
    "resnet50": 5.37,
    "resnext29_2x32d": 5.78,
    "resnext29_2x64d": 4.54,
    "resnext29_8x64d": 4.19,
    "resnext50_2x40d": 5.33,
    "resnext50_8x14d": 4.80,
    "resnext50_32x4d": 4.54,
}

#: Chapter 2's comparison groups: what each one varies, and its members in the report's order.
ABLATION_GROUPS: dict[str, tuple[str, ...]] = {
    "depth": ("resnet18", "resnet50"),
    "width": ("resnext29_2x32d", "resnext29_2x64d"),
    "cardinality": ("resnext29_2x64d", "resnext29_8x64d"),
    "cardinality vs width (fixed complexity)": ("resnet50", "resnext50_2x40d", "resnext50_8x14d", "resnext50_32x4d"),
}

#: Parameter counts the report printed where they differ from the code (see cifar_utils.models).
REPORTED_PARAMS_M: dict[str, float] = {"resnext50_32x4d": 22.98}

#: Chapter 3's qualitative findings, checked against the reproduced curves in the chapter.
TRAINING_CHOICE_FINDINGS: dict[str, str] = {
    "activation": "Sigmoid lags far behind; among the ReLU family LeakyReLU converges fastest and ELU "
                  "slowest; GELU is the steadiest on the test set.",
    "loss": "Cross-entropy is best, then BCE, then MSE, then Huber (CE > BCE > MSE > Huber).",
    "optimizer": "Adagrad is the worst; SGD, Adadelta and Adam are comparable.",
}

#: Chapter 4: the best model, top-1 test error in percent. The report: WRN-28-10 without Cutout as in
#: chapter 1, with Cutout (one 16x16 hole) 96.65% accuracy = 3.35% error.
BEST_MODEL_ERRORS: dict[str, float] = {"wrn28_10": 4.27, "wrn28_10_cutout": 3.35}
#: The Cutout paper (DeVries & Taylor 2017, Table 1, WRN-28-10 on CIFAR-10 with standard augmentation,
#: mean of 5 runs): 3.87% without Cutout, 3.08% with.
CUTOUT_PAPER_ERRORS: dict[str, float] = {"wrn28_10": 3.87, "wrn28_10_cutout": 3.08}


#: Chapter 1's reading of the report's Table 1, as claims about each model against ResNet-18. The
#: chapter shows each beside the computed comparison (``tables.compare_with_reference``); a claim is
#: the report's until the reproduced runs confirm it.
ARCHITECTURE_REFERENCE = "resnet18"
#: The claims themselves, model -> the report's words (measured against :data:`ARCHITECTURE_REFERENCE`).
ARCHITECTURE_CLAIMS: dict[str, str] = {
    "wrn28_10": "lowest error of the seven, bought with about 3x the parameters and 10x the compute of ResNet-18",
    "resnext29_32x4d": "reaches ResNet-18's error with less than half its parameters",
    "densenet121": "reaches ResNet-18's error with less than half its parameters",
}

#: Chapter 2's conclusions, one per comparison group of :data:`ABLATION_GROUPS` (the report's words,
#: checked by ``tables.group_comparison(..., claims=ABLATION_CLAIMS)``).
ABLATION_CLAIMS: dict[str, str] = {
    "depth": "depth alone does not help: ResNet-50 is worse than ResNet-18",
    "width": "width helps: 2x64d is better than 2x32d",
    "cardinality": "cardinality helps: 8x64d is better than 2x64d",
    "cardinality vs width (fixed complexity)": "at a fixed budget more paths beat more width: 32x4d is the best ResNeXt-50",
}


#: Chapter 6 (Table 3): LeNet on MNIST trained with SLBI, test accuracy (percent) after pruning the
#: given percentage of conv3's filters by DessiLBI's order.
SLBI_LENET_PRUNING_ACC: dict[int, float] = {0: 98.65, 10: 98.65, 20: 98.65, 40: 98.64, 60: 98.60, 80: 98.30}
