import torch

from pipeline.evaluation.bins import bin_index, bin_labels, mask_ratio_bins

PAPER_EDGES = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def test_paper_bins_are_named_and_placed_by_their_midpoint():
    bins = mask_ratio_bins(PAPER_EDGES)
    assert [b.label for b in bins] == ["1%-10%", "10%-20%", "20%-30%", "30%-40%", "40%-50%", "50%-60%"]
    assert [b.midpoint_percent for b in bins] == [5.5, 15.0, 25.0, 35.0, 45.0, 55.0]


def test_edges_belong_to_the_bin_above_except_the_last_upper_edge():
    ratios = torch.tensor([0.01, 0.0999, 0.1, 0.5, 0.6, 0.005, 0.61])
    assert bin_index(ratios, PAPER_EDGES).tolist() == [0, 0, 1, 5, 5, -1, -1]
    assert bin_labels(ratios, PAPER_EDGES)[-3:] == ["50%-60%", "", ""]
