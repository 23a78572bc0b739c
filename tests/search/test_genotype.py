import pytest

from modulenet.errors import GenotypeError, ModuleNetError
from modulenet.genotype import describe_genotype, format_genotype, is_original, parse_genotype, search_space_size

NAMES = ["resnet34", "resnet50", "vgg16"]


@pytest.mark.parametrize(
    "value",
    ["21111", "2,1,1,1,1", "2 1 1 1 1", [2, 1, 1, 1, 1], (2, 1, 1, 1, 1), ["vgg16", "resnet50", 1, "1", "resnet50"]],
)
def test_parse_accepts_the_documented_forms(value):
    assert parse_genotype(value, NAMES, 5) == (2, 1, 1, 1, 1)


def test_parse_with_n_only_and_many_architectures():
    assert parse_genotype("11,0,3", 12, 3) == (11, 0, 3)
    assert format_genotype((11, 0, 3)) == "11,0,3"
    assert format_genotype((2, 1, 1, 1, 1)) == "21111"


def test_search_space_size():
    assert search_space_size(7, 5) == 7**5
    assert search_space_size(4, 3) == 64


@pytest.mark.parametrize(
    "value, message",
    [
        ("21131", r"position 3 is 3; valid range is \[0, 2\] \(n = 3"),
        ([0, 0, -1, 0, 0], r"position 2 is -1; valid range is \[0, 2\]"),
        ([0, 0, "vgg19", 0, 0], r"position 2 is 'vgg19'; valid values are integers in \[0, 2\] or names in"),
        ("2111", r"has 4 positions; the knowledge base has c = 5 cells"),
        ([0, 0, True, 0, 0], r"position 2 is True"),
        (7, r"not a sequence"),
    ],
)
def test_bad_genotypes_name_position_and_valid_range(value, message):
    with pytest.raises(GenotypeError, match=message) as info:
        parse_genotype(value, NAMES, 5)
    assert isinstance(info.value, ModuleNetError)
    assert "\n" not in str(info.value)


def test_describe():
    assert describe_genotype((2, 0, 0), NAMES) == ["vgg16", "resnet34", "resnet34"]


def test_an_original_is_one_architecture_in_every_cell():
    assert is_original((2, 2, 2)) and is_original("111") and is_original([0])
    assert not is_original((1, 2, 2)) and not is_original("122")
