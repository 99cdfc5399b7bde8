#!/usr/bin/env python3
"""Export EfficientNet-B4 to ONNX with its classifier logits and four feature taps.

    python3 train/export_efficientnet.py --out efficientnet-b4.onnx [--weights random|imagenet|PATH.pth]

The ONNX model has one input and five outputs (opset 17, dynamic batch 'N'):

    input    [N, 3, S, S]     float32, ImageNet-normalized RGB (S = --input-size, default 256)
    logits   [N, 1000]        the classifier head (pruned again by `invad backbone`)
    tap_s2   [N, 24, S/2, S/2]     output of stage 1 (features[1])
    tap_s4   [N, 32, S/4, S/4]     output of stage 2 (features[2])
    tap_s8   [N, 56, S/8, S/8]     output of stage 3 (features[3])
    tap_s16  [N, 160, S/16, S/16]  output of stage 5 (features[5])

`invad backbone --backbone-preset efficientnet-b4 --model efficientnet-b4.onnx` then resizes
the taps to 16x16 and concatenates them: 272 x 16 x 16 at 256 px (docs/method.md, "Features").
Saved as models/efficientnet-b4.onnx (or in $INVAD_MODELS_DIR), `invad fit --backbone-preset
efficientnet-b4` finds it without --backbone-model.

Model source: torchvision.models.efficientnet_b4 when torchvision is installed, otherwise a
compact re-implementation below whose parameter names match torchvision's, so torchvision's
ImageNet state dict loads into it unchanged.

Weights:
  random    seeded random init (torchvision's init scheme), offline; for tests and plumbing
  imagenet  torchvision's IMAGENET1K_V1 weights (needs torchvision or internet access)
  PATH      a local state dict (.pth) in torchvision's key layout
"""

import argparse
import math
import os
import sys
import time

INSTALL_HINT = (
    "PyTorch and onnx are required to export EfficientNet-B4. Install them with\n"
    "  apt-get install -y --no-install-recommends python3-torch python3-numpy python3-onnx\n"
    "or\n"
    "  pip install torch onnx"
)

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - environment dependent
    sys.stderr.write("export_efficientnet.py: PyTorch is not installed.\n" + INSTALL_HINT + "\n")
    sys.exit(3)

# torchvision's ImageNet weights for efficientnet_b4 (EfficientNet_B4_Weights.IMAGENET1K_V1).
IMAGENET_URL = "https://download.pytorch.org/models/efficientnet_b4_rwightman-23ab8bcd.pth"

WIDTH_MULT = 1.4
DEPTH_MULT = 1.8
DROPOUT = 0.4
# B0 stage table: expand ratio, kernel, stride, in channels, out channels, layers.
B0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
# features[i] whose outputs are the taps, and their names.
TAPS = [(1, "tap_s2"), (2, "tap_s4"), (3, "tap_s8"), (5, "tap_s16")]


def make_divisible(v, divisor=8, min_value=None):
    """torchvision's _make_divisible."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def adjust_channels(c):
    return make_divisible(c * WIDTH_MULT, 8)


def adjust_depth(n):
    return int(math.ceil(n * DEPTH_MULT))


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d [+ SiLU]; children 0, 1, 2 as torchvision's Conv2dNormActivation."""

    def __init__(self, cin, cout, k, stride=1, groups=1, act=True):
        layers = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.SiLU(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, cin, csq):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(cin, csq, 1)
        self.fc2 = nn.Conv2d(csq, cin, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


class MBConv(nn.Module):
    def __init__(self, expand, k, stride, cin, cout):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        cexp = make_divisible(cin * expand, 8)
        layers = []
        if cexp != cin:
            layers.append(ConvNormAct(cin, cexp, 1))
        layers.append(ConvNormAct(cexp, cexp, k, stride, groups=cexp))
        layers.append(SqueezeExcitation(cexp, max(1, cin // 4)))
        layers.append(ConvNormAct(cexp, cout, 1, act=False))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        # Stochastic depth is the identity at inference.
        return y + x if self.use_res else y


class EfficientNetB4(nn.Module):
    """Same module tree and parameter names as torchvision.models.efficientnet_b4."""

    def __init__(self, num_classes=1000):
        super().__init__()
        stem = adjust_channels(32)
        layers = [ConvNormAct(3, stem, 3, 2)]
        for expand, k, stride, cin, cout, n in B0_STAGES:
            cin, cout = adjust_channels(cin), adjust_channels(cout)
            stage = []
            for i in range(adjust_depth(n)):
                stage.append(MBConv(expand, k, stride if i == 0 else 1, cin if i == 0 else cout, cout))
            layers.append(nn.Sequential(*stage))
        last_in = adjust_channels(B0_STAGES[-1][4])
        last = 4 * last_in
        layers.append(ConvNormAct(last_in, last, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=DROPOUT, inplace=True), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def init_like_torchvision(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            r = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)


class TapModel(nn.Module):
    """Returns (logits, tap_s2, tap_s4, tap_s8, tap_s16)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        taps = {}
        wanted = dict(TAPS)
        for i, layer in enumerate(self.net.features):
            x = layer(x)
            if i in wanted:
                taps[wanted[i]] = x
        logits = self.net.classifier(torch.flatten(self.net.avgpool(x), 1))
        return (logits,) + tuple(taps[name] for _, name in TAPS)


def build_model(weights, seed):
    try:
        import torchvision  # noqa: F401

        have_tv = True
    except ImportError:
        have_tv = False

    if have_tv:
        from torchvision.models import efficientnet_b4

        source = "torchvision"
        if weights == "imagenet":
            try:
                net = efficientnet_b4(weights="IMAGENET1K_V1")
            except TypeError:  # torchvision < 0.13
                net = efficientnet_b4(pretrained=True)
            return net, source, "imagenet (torchvision IMAGENET1K_V1)"
        torch.manual_seed(seed)
        net = efficientnet_b4()
        init_like_torchvision(net)
    else:
        source = "compact (torchvision not installed)"
        torch.manual_seed(seed)
        net = EfficientNetB4()
        init_like_torchvision(net)

    if weights == "random":
        return net, source, f"random (seed {seed})"
    if weights == "imagenet":
        try:
            state = torch.hub.load_state_dict_from_url(IMAGENET_URL, map_location="cpu", progress=False)
        except Exception as e:  # no internet, proxy, ...
            raise SystemExit(
                f"export_efficientnet.py: could not download ImageNet weights from {IMAGENET_URL}: {e}\n"
                "Install torchvision with internet access, or download the file elsewhere and pass "
                "--weights PATH.pth."
            ) from e
        desc = f"imagenet ({IMAGENET_URL})"
    else:
        if not os.path.isfile(weights):
            raise SystemExit(
                f"export_efficientnet.py: --weights must be random, imagenet or a .pth file; {weights!r} is none"
            )
        state = torch.load(weights, map_location="cpu")
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        desc = f"file {weights}"
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(
            "export_efficientnet.py: the weights do not match EfficientNet-B4 "
            f"(missing {len(missing)}: {missing[:5]}, unexpected {len(unexpected)}: {unexpected[:5]})"
        )
    return net, source, desc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--weights", default="random", help="random | imagenet | PATH.pth (default random)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --weights random (default 0)")
    ap.add_argument(
        "--input-size",
        type=int,
        default=256,
        help="square input size used for tracing and the exported input shape (default 256)",
    )
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    if args.input_size < 32 or args.input_size % 16 != 0:
        ap.error("--input-size must be a multiple of 16, at least 32")

    t0 = time.time()
    torch.set_grad_enabled(False)
    net, source, desc = build_model(args.weights, args.seed)
    model = TapModel(net).eval()
    s = args.input_size
    x = torch.zeros(2, 3, s, s)
    outs = model(x)
    names = ["logits"] + [n for _, n in TAPS]

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    dynamic = {"input": {0: "N"}}
    for n in names:
        dynamic[n] = {0: "N"}
    torch.onnx.export(
        model,
        (x,),
        args.out,
        input_names=["input"],
        output_names=names,
        dynamic_axes=dynamic,
        opset_version=args.opset,
        do_constant_folding=True,
    )
    print(f"EfficientNet-B4 [{source}], weights: {desc}")
    print(f"input: [N, 3, {s}, {s}]")
    for n, o in zip(names, outs, strict=True):
        print(f"{n}: [N, {', '.join(str(d) for d in o.shape[1:])}]")
    taps = outs[1:]
    grid = taps[-1].shape[2:]
    total = sum(t.shape[1] for t in taps)
    print(f"features (taps resized to the coarsest tap): {total} x {grid[0]} x {grid[1]}")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
