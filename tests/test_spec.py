import pytest

from edgelstm import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec, SpecError


def test_defaults_and_derived_sizes():
    s = LSTMSpec(40, 64, num_layers=3, bidirectional=True, proj_size=16)
    assert (s.num_directions, s.out_size, s.output_size) == (2, 16, 32)
    assert [s.layer_input_size(l) for l in range(3)] == [40, 32, 32]
    assert LSTMSpec(40, 64).output_size == 64


@pytest.mark.parametrize("kwargs, field, given", [
    (dict(input_size=0, hidden_size=4), "input_size", "0"),
    (dict(input_size=3, hidden_size=-4), "hidden_size", "-4"),
    (dict(input_size=3, hidden_size=4, num_layers=0), "num_layers", "0"),
    (dict(input_size=3.5, hidden_size=4), "input_size", "3.5"),
    (dict(input_size=True, hidden_size=4), "input_size", "True"),
    (dict(input_size=3, hidden_size=4, proj_size=4), "proj_size", "4"),
    (dict(input_size=3, hidden_size=4, proj_size=-1), "proj_size", "-1"),
    (dict(input_size=3, hidden_size=4, bias="tf"), "bias", "'tf'"),
    (dict(input_size=3, hidden_size=4, bidirectional=1), "bidirectional", "1"),
])
def test_bad_fields_name_the_field_and_the_value(kwargs, field, given):
    with pytest.raises(SpecError) as e:
        LSTMSpec(**kwargs)
    assert f"LSTMSpec.{field}" in str(e.value) and given in str(e.value)
    assert "expected" in str(e.value)


def test_spec_is_frozen_and_hashable():
    s = LSTMSpec(3, 4)
    with pytest.raises(Exception):
        s.hidden_size = 5
    assert {s: 1}[LSTMSpec(3, 4)] == 1


def test_model_spec_checks_that_stacks_chain():
    a, b = LSTMSpec(8, 16, bidirectional=True), LSTMSpec(32, 4)
    m = ModelSpec(stacks=[a, b], embedding=EmbeddingSpec(100, 8), head=DenseSpec(3))
    assert m.stacks == (a, b) and m.head_in_features == 4
    with pytest.raises(SpecError, match=r"stacks\[1\].input_size: expected stack 0's output size 32, got 16"):
        ModelSpec(stacks=(a, LSTMSpec(16, 4)))
    with pytest.raises(SpecError, match="embedding_dim 9, got 8"):
        ModelSpec(stacks=(a,), embedding=EmbeddingSpec(100, 9))
    with pytest.raises(SpecError, match="exactly 2 stacks"):
        ModelSpec(stacks=(a,), topology="encoder_decoder")
    with pytest.raises(SpecError, match="one or more"):
        ModelSpec(stacks=())
    # an encoder/decoder: both stacks read the embedding, so they need not chain
    ed = ModelSpec(stacks=(LSTMSpec(8, 16), LSTMSpec(8, 16)), embedding=EmbeddingSpec(10, 8),
                   topology="encoder_decoder")
    assert ModelSpec.of(ed) is ed and ModelSpec.of(a).stacks == (a,)
