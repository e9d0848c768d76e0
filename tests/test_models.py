"""Model zoo: exact sizes, shapes, Grad-CAM layers, options and the summary table.

Parameter counts and shape checks build models on the ``meta`` device (shapes only, no
weights), so the suite stays fast on a CPU; the forward-pass test runs real weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cifar_utils.models import (
    ACTIVATIONS,
    create_model,
    get_cam_layer,
    list_models,
    model_summary,
    register_model,
)
from cifar_utils.models import registry

# name -> (trainable params at 10 classes, Grad-CAM map side for the model's input size)
EXPECTED: dict[str, tuple[int, int]] = {
    "resnet18": (11_173_962, 4),
    "preact_resnet18": (11_171_146, 4),
    "wrn28_10": (36_489_290, 8),
    "resnext29_32x4d": (4_774_218, 8),
    "resnext29_2x32d": (2_297_418, 8),
    "resnext29_2x64d": (9_128_778, 8),
    "resnext29_8x64d": (89_598_282, 8),
    "resnext50_2x40d": (17_296_650, 4),
    "resnext50_8x14d": (20_864_362, 4),
    "resnext50_32x4d": (22_991_178, 4),  # the report says 22.98M; see resnext.py
    "resnet50": (23_520_842, 4),
    "densenet121": (6_956_298, 4),
    "dpn26": (11_574_842, 4),
    "dla": (16_291_386, 4),
    "vgg_a": (9_750_922, 2),
    "vgg_a_bn": (9_756_426, 2),
    "lenet": (61_706, 10),
}
NAMES = sorted(EXPECTED)
RESNET18_FAMILY = {"resnet18": 17, "preact_resnet18": 16}  # activation sites
ACT_MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU}
ACT_FUNCTIONS = {
    "relu": {"relu", "relu_"},
    "sigmoid": {"sigmoid", "sigmoid_"},
    "leaky_relu": {"leaky_relu", "leaky_relu_"},
    "elu": {"elu", "elu_"},
    "gelu": {"gelu"},
}


def meta_model(name: str, **options: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_list_models_has_exactly_the_zoo() -> None:
    from cifar_utils.models.registry import _REGISTRY

    # models registered by other code (e.g. the engine's test model) are not part of the zoo
    zoo = [n for n in list_models() if _REGISTRY[n].__module__.startswith("cifar_utils.models.")]
    assert zoo == NAMES
    assert list_models("resnext29_*") == ["resnext29_2x32d", "resnext29_2x64d", "resnext29_32x4d", "resnext29_8x64d"]
    assert list_models("nope*") == []


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_is_exact(name: str) -> None:
    assert n_params(meta_model(name)) == EXPECTED[name][0]


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *model.input_size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_cam_layer_is_last_spatial_stage(name: str) -> None:
    model = meta_model(name).eval()
    layer = get_cam_layer(model)
    assert layer is model.get_submodule(type(model).cam_layer)
    seen: list[torch.Size] = []
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model(torch.empty(2, *model.input_size, device="meta"))
    assert len(seen) == 1, "the CAM layer must run exactly once per forward"
    side = EXPECTED[name][1]
    assert seen[0][0] == 2 and seen[0][2:] == (side, side)
    if name != "lenet":  # LeNet deliberately looks at conv2, before conv3/fc
        assert seen[0][1] == [m for m in model.modules() if isinstance(m, nn.Linear)][0].in_features


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_and_in_channels(name: str) -> None:
    model = meta_model(name, num_classes=100, in_channels=2)
    head = last_linear(model)
    assert head.out_features == 100
    assert n_params(model) > EXPECTED[name][0]
    out = model(torch.empty(2, 2, *model.input_size[1:], device="meta"))
    assert out.shape == (2, 100)
    assert model.input_size[0] == 2


def test_num_classes_100_on_real_weights() -> None:
    model = create_model("resnet18", num_classes=100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert n_params(model) == EXPECTED["resnet18"][0] + 90 * (512 + 1)


def test_lenet_is_mnist_sized() -> None:
    model = create_model("lenet").eval()
    assert model.input_size == (1, 28, 28)
    assert (model.conv1.in_channels, model.conv3.out_channels) == (1, 120)
    assert (model.fc1.in_features, model.fc2.out_features) == (120, 10)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    rgb = create_model("lenet", in_channels=3)
    assert rgb.conv1.in_channels == 3 and rgb.input_size == (3, 28, 28)


class _CallRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.add(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", sorted(RESNET18_FAMILY))
def test_activation_replaces_every_site(name: str, activation: str) -> None:
    model = create_model(name, activation=activation).eval()
    chosen = ACT_MODULES[activation]
    sites = [m for m in model.modules() if isinstance(m, chosen)]
    others = [m for m in model.modules() if isinstance(m, tuple(ACT_MODULES.values())) and not isinstance(m, chosen)]
    assert not others
    assert len(sites) == RESNET18_FAMILY[name]
    calls = {id(m): 0 for m in sites}
    for m in sites:
        m.register_forward_hook(lambda mod, _i, _o: calls.__setitem__(id(mod), calls[id(mod)] + 1))
    recorder = _CallRecorder()
    with torch.no_grad(), recorder:
        model(torch.randn(1, 3, 32, 32))
    assert set(calls.values()) == {1}, "every activation module runs exactly once"
    forbidden = set().union(*(f for a, f in ACT_FUNCTIONS.items() if a != activation))
    assert not recorder.names & forbidden, f"functional activations bypassed the option: {recorder.names & forbidden}"
    assert recorder.names & ACT_FUNCTIONS[activation]


def test_activations_tuple() -> None:
    assert ACTIVATIONS == ("relu", "sigmoid", "leaky_relu", "elu", "gelu")


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet1") as info:
        create_model("resnet1")
    listed = str(info.value).split(":", 1)[-1]
    assert all(name in listed for name in NAMES), "the message lists every known model"


def test_unknown_option_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(TypeError) as info:
        create_model("resnet18", activaton="gelu")
    msg = str(info.value)
    assert "activaton" in msg and "activation" in msg and "in_channels" in msg
    with pytest.raises(TypeError, match="activation"):
        create_model("resnet50", activation="gelu")  # only the ResNet-18 family has it


def test_bad_option_values_list_allowed_ones() -> None:
    with pytest.raises(ValueError) as info:
        create_model("resnet18", activation="tanhh")
    assert "tanhh" in str(info.value) and all(a in str(info.value) for a in ACTIVATIONS)
    with pytest.raises(ValueError, match="dropout"):
        create_model("wrn28_10", dropout=1.5)


def test_wrn_dropout_option() -> None:
    default = [m.p for m in meta_model("wrn28_10").modules() if isinstance(m, nn.Dropout)]
    assert default == [0.3] * 12
    assert {m.p for m in meta_model("wrn28_10", dropout=0.0).modules() if isinstance(m, nn.Dropout)} == {0.0}


def test_construction_is_deterministic() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return list(create_model("resnet18").state_dict().values())

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model
    def tiny(num_classes: int = 10, width: int = 4) -> nn.Module:
        return nn.Linear(width, num_classes)

    assert "tiny" in list_models()
    assert create_model("tiny", num_classes=3, width=5).weight.shape == (3, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_model(tiny)


def test_get_cam_layer_needs_the_attribute() -> None:
    with pytest.raises(TypeError, match="cam_layer"):
        get_cam_layer(nn.Linear(2, 2))


def test_model_summary() -> None:
    df = model_summary(["resnet18", "lenet", "resnext50_32x4d"])
    assert list(df.columns) == ["model", "params", "params_m", "gflops", "input_size"]
    rows = df.set_index("model")
    for name in ("resnet18", "lenet", "resnext50_32x4d"):
        assert rows.loc[name, "params"] == EXPECTED[name][0]
        assert rows.loc[name, "params_m"] == round(EXPECTED[name][0] / 1e6, 2)
    assert df["params"].dtype.kind == "i"
    assert (df["gflops"] > 0).all()
    assert rows.loc["resnet18", "gflops"] == pytest.approx(1.11, abs=0.1)  # 0.56 GMACs x 2
    assert rows.loc["lenet", "input_size"] == "1x28x28"
    assert rows.loc["resnet18", "input_size"] == "3x32x32"
    assert set(NAMES) <= set(model_summary()["model"])
