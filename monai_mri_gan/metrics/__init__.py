"""Offline metrics of generated slices and painted lesions: feature extractors, FID, KID, precision/recall, diversity,
memorisation, seams and lesion consistency."""

from __future__ import annotations

from .classifier import (
    CLASSIFIER_FEATURE_LAYER,
    build_slice_classifier,
    class_fidelity,
    classifier_feature_extractor,
    classifier_logits,
    load_slice_classifier,
    predict_classes,
    save_slice_classifier,
    train_slice_classifier,
)
from .distances import (
    disjoint_halves,
    distribution_metrics,
    feature_standardisation,
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd2_unbiased,
    precision_recall,
    real_vs_real_baseline,
)
from .diversity import ms_ssim_diversity, ms_ssim_settings
from .features import (
    EncoderFeatureExtractor,
    FeatureExtractor,
    LocalWeightsFeatureExtractor,
    RadiomicsFeatureExtractor,
    build_backbone,
    build_feature_extractor,
    feature_extractor_names,
    register_feature_extractor,
)
from .lesions import (
    label_map_correlation,
    masked_correlation,
    seam_band,
    seam_gradient,
    segmentation_dice,
    train_lesion_segmenter,
)
from .memorisation import memorisation_report, save_closest_pairs_png
from .ranking import LOWER_IS_BETTER, lower_is_better, metric_cmp_fn_for
from .report import radiological_view, save_metric_bars_png, save_sample_grid_png, write_json_atomic

__all__ = [
    "CLASSIFIER_FEATURE_LAYER",
    "LOWER_IS_BETTER",
    "EncoderFeatureExtractor",
    "FeatureExtractor",
    "LocalWeightsFeatureExtractor",
    "RadiomicsFeatureExtractor",
    "build_backbone",
    "build_feature_extractor",
    "build_slice_classifier",
    "class_fidelity",
    "classifier_feature_extractor",
    "classifier_logits",
    "disjoint_halves",
    "distribution_metrics",
    "feature_extractor_names",
    "feature_standardisation",
    "frechet_distance",
    "kernel_inception_distance",
    "label_map_correlation",
    "load_slice_classifier",
    "lower_is_better",
    "masked_correlation",
    "memorisation_report",
    "metric_cmp_fn_for",
    "ms_ssim_diversity",
    "ms_ssim_settings",
    "polynomial_mmd2_unbiased",
    "precision_recall",
    "predict_classes",
    "radiological_view",
    "real_vs_real_baseline",
    "register_feature_extractor",
    "save_closest_pairs_png",
    "save_metric_bars_png",
    "save_sample_grid_png",
    "save_slice_classifier",
    "seam_band",
    "seam_gradient",
    "segmentation_dice",
    "train_lesion_segmenter",
    "train_slice_classifier",
    "write_json_atomic",
]
