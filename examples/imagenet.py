"""ImageNet and its shifted versions in Deephys: a pretrained ResNet or ViT, ``trainer.validate``.

The ImageNet experiments of the Deephys paper: a pretrained classifier is run once
over ImageNet's validation set (the in-distribution set) and over ImageNetV2,
ImageNet-Sketch and Stylized-ImageNet (the OOD sets); ``DeephysCallback`` records
the penultimate layer (ResNets: ``avgpool``, 512 or 2,048 neurons) or, for the
vision transformer, the encoder's output averaged over its tokens (``encoder.ln``,
768 neurons); the log names them ``network.avgpool`` and ``network.encoder.ln``.
The score table is printed at the end; the Deephys tab of TensorBoard shows the
neurons, images and categories.

Nothing is downloaded. The weights come from ``--weights PATH`` (a state_dict) or
from torchvision's cache (``torch.hub.get_dir()/checkpoints/``, where
``torchvision.models.resnet18(weights=...)`` keeps them); ``--random-weights``
runs an untrained model, for smoke tests only. Every set is a folder in
torchvision's ``ImageFolder`` layout, one sub-folder per class named by its WordNet
synset (``n01440764``, ImageNet, Sketch, Stylized, ImageNet-R/A) or by its class
index (``0`` .. ``999``, ImageNetV2); either way labels are the standard 1,000-class
indices, so a set may hold only some of the classes. See docs/examples/imagenet.md.

Example::

    python examples/imagenet.py --arch resnet18 \\
        --imagenet-val ~/data/imagenet/val \\
        --ood imagenetv2=~/data/imagenetv2-matched-frequency-format-val \\
        --ood sketch=~/data/imagenet-sketch/sketch \\
        --ood stylized=~/data/stylized-imagenet/val \\
        --logdir lightning_logs --accelerator gpu --devices 1
    python examples/imagenet.py --arch vit_b_16 --imagenet-val ~/data/imagenet/val \\
        --ood sketch=~/data/imagenet-sketch/sketch --max-images 10000
    tensorboard --logdir lightning_logs          # then the "Deephys" tab
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import models
from torchvision.datasets import ImageFolder
from torchvision.models import WeightsEnum

from deephys_lightning import DeephysCallback
from deephys_lightning.scores import format_table, score_table

PROG = "examples/imagenet.py"
IND_NAME = "imagenet"
NUM_CLASSES = 1000

# The 1,000 WordNet synsets of ImageNet-1k (ILSVRC 2012), sorted: position = class
# index, the order of torchvision's ``weights.meta["categories"]`` (ten per line).
_WNIDS = """
n01440764 n01443537 n01484850 n01491361 n01494475 n01496331 n01498041 n01514668 n01514859 n01518878
n01530575 n01531178 n01532829 n01534433 n01537544 n01558993 n01560419 n01580077 n01582220 n01592084
n01601694 n01608432 n01614925 n01616318 n01622779 n01629819 n01630670 n01631663 n01632458 n01632777
n01641577 n01644373 n01644900 n01664065 n01665541 n01667114 n01667778 n01669191 n01675722 n01677366
n01682714 n01685808 n01687978 n01688243 n01689811 n01692333 n01693334 n01694178 n01695060 n01697457
n01698640 n01704323 n01728572 n01728920 n01729322 n01729977 n01734418 n01735189 n01737021 n01739381
n01740131 n01742172 n01744401 n01748264 n01749939 n01751748 n01753488 n01755581 n01756291 n01768244
n01770081 n01770393 n01773157 n01773549 n01773797 n01774384 n01774750 n01775062 n01776313 n01784675
n01795545 n01796340 n01797886 n01798484 n01806143 n01806567 n01807496 n01817953 n01818515 n01819313
n01820546 n01824575 n01828970 n01829413 n01833805 n01843065 n01843383 n01847000 n01855032 n01855672
n01860187 n01871265 n01872401 n01873310 n01877812 n01882714 n01883070 n01910747 n01914609 n01917289
n01924916 n01930112 n01943899 n01944390 n01945685 n01950731 n01955084 n01968897 n01978287 n01978455
n01980166 n01981276 n01983481 n01984695 n01985128 n01986214 n01990800 n02002556 n02002724 n02006656
n02007558 n02009229 n02009912 n02011460 n02012849 n02013706 n02017213 n02018207 n02018795 n02025239
n02027492 n02028035 n02033041 n02037110 n02051845 n02056570 n02058221 n02066245 n02071294 n02074367
n02077923 n02085620 n02085782 n02085936 n02086079 n02086240 n02086646 n02086910 n02087046 n02087394
n02088094 n02088238 n02088364 n02088466 n02088632 n02089078 n02089867 n02089973 n02090379 n02090622
n02090721 n02091032 n02091134 n02091244 n02091467 n02091635 n02091831 n02092002 n02092339 n02093256
n02093428 n02093647 n02093754 n02093859 n02093991 n02094114 n02094258 n02094433 n02095314 n02095570
n02095889 n02096051 n02096177 n02096294 n02096437 n02096585 n02097047 n02097130 n02097209 n02097298
n02097474 n02097658 n02098105 n02098286 n02098413 n02099267 n02099429 n02099601 n02099712 n02099849
n02100236 n02100583 n02100735 n02100877 n02101006 n02101388 n02101556 n02102040 n02102177 n02102318
n02102480 n02102973 n02104029 n02104365 n02105056 n02105162 n02105251 n02105412 n02105505 n02105641
n02105855 n02106030 n02106166 n02106382 n02106550 n02106662 n02107142 n02107312 n02107574 n02107683
n02107908 n02108000 n02108089 n02108422 n02108551 n02108915 n02109047 n02109525 n02109961 n02110063
n02110185 n02110341 n02110627 n02110806 n02110958 n02111129 n02111277 n02111500 n02111889 n02112018
n02112137 n02112350 n02112706 n02113023 n02113186 n02113624 n02113712 n02113799 n02113978 n02114367
n02114548 n02114712 n02114855 n02115641 n02115913 n02116738 n02117135 n02119022 n02119789 n02120079
n02120505 n02123045 n02123159 n02123394 n02123597 n02124075 n02125311 n02127052 n02128385 n02128757
n02128925 n02129165 n02129604 n02130308 n02132136 n02133161 n02134084 n02134418 n02137549 n02138441
n02165105 n02165456 n02167151 n02168699 n02169497 n02172182 n02174001 n02177972 n02190166 n02206856
n02219486 n02226429 n02229544 n02231487 n02233338 n02236044 n02256656 n02259212 n02264363 n02268443
n02268853 n02276258 n02277742 n02279972 n02280649 n02281406 n02281787 n02317335 n02319095 n02321529
n02325366 n02326432 n02328150 n02342885 n02346627 n02356798 n02361337 n02363005 n02364673 n02389026
n02391049 n02395406 n02396427 n02397096 n02398521 n02403003 n02408429 n02410509 n02412080 n02415577
n02417914 n02422106 n02422699 n02423022 n02437312 n02437616 n02441942 n02442845 n02443114 n02443484
n02444819 n02445715 n02447366 n02454379 n02457408 n02480495 n02480855 n02481823 n02483362 n02483708
n02484975 n02486261 n02486410 n02487347 n02488291 n02488702 n02489166 n02490219 n02492035 n02492660
n02493509 n02493793 n02494079 n02497673 n02500267 n02504013 n02504458 n02509815 n02510455 n02514041
n02526121 n02536864 n02606052 n02607072 n02640242 n02641379 n02643566 n02655020 n02666196 n02667093
n02669723 n02672831 n02676566 n02687172 n02690373 n02692877 n02699494 n02701002 n02704792 n02708093
n02727426 n02730930 n02747177 n02749479 n02769748 n02776631 n02777292 n02782093 n02783161 n02786058
n02787622 n02788148 n02790996 n02791124 n02791270 n02793495 n02794156 n02795169 n02797295 n02799071
n02802426 n02804414 n02804610 n02807133 n02808304 n02808440 n02814533 n02814860 n02815834 n02817516
n02823428 n02823750 n02825657 n02834397 n02835271 n02837789 n02840245 n02841315 n02843684 n02859443
n02860847 n02865351 n02869837 n02870880 n02871525 n02877765 n02879718 n02883205 n02892201 n02892767
n02894605 n02895154 n02906734 n02909870 n02910353 n02916936 n02917067 n02927161 n02930766 n02939185
n02948072 n02950826 n02951358 n02951585 n02963159 n02965783 n02966193 n02966687 n02971356 n02974003
n02977058 n02978881 n02979186 n02980441 n02981792 n02988304 n02992211 n02992529 n02999410 n03000134
n03000247 n03000684 n03014705 n03016953 n03017168 n03018349 n03026506 n03028079 n03032252 n03041632
n03042490 n03045698 n03047690 n03062245 n03063599 n03063689 n03065424 n03075370 n03085013 n03089624
n03095699 n03100240 n03109150 n03110669 n03124043 n03124170 n03125729 n03126707 n03127747 n03127925
n03131574 n03133878 n03134739 n03141823 n03146219 n03160309 n03179701 n03180011 n03187595 n03188531
n03196217 n03197337 n03201208 n03207743 n03207941 n03208938 n03216828 n03218198 n03220513 n03223299
n03240683 n03249569 n03250847 n03255030 n03259280 n03271574 n03272010 n03272562 n03290653 n03291819
n03297495 n03314780 n03325584 n03337140 n03344393 n03345487 n03347037 n03355925 n03372029 n03376595
n03379051 n03384352 n03388043 n03388183 n03388549 n03393912 n03394916 n03400231 n03404251 n03417042
n03424325 n03425413 n03443371 n03444034 n03445777 n03445924 n03447447 n03447721 n03450230 n03452741
n03457902 n03459775 n03461385 n03467068 n03476684 n03476991 n03478589 n03481172 n03482405 n03483316
n03485407 n03485794 n03492542 n03494278 n03495258 n03496892 n03498962 n03527444 n03529860 n03530642
n03532672 n03534580 n03535780 n03538406 n03544143 n03584254 n03584829 n03590841 n03594734 n03594945
n03595614 n03598930 n03599486 n03602883 n03617480 n03623198 n03627232 n03630383 n03633091 n03637318
n03642806 n03649909 n03657121 n03658185 n03661043 n03662601 n03666591 n03670208 n03673027 n03676483
n03680355 n03690938 n03691459 n03692522 n03697007 n03706229 n03709823 n03710193 n03710637 n03710721
n03717622 n03720891 n03721384 n03724870 n03729826 n03733131 n03733281 n03733805 n03742115 n03743016
n03759954 n03761084 n03763968 n03764736 n03769881 n03770439 n03770679 n03773504 n03775071 n03775546
n03776460 n03777568 n03777754 n03781244 n03782006 n03785016 n03786901 n03787032 n03788195 n03788365
n03791053 n03792782 n03792972 n03793489 n03794056 n03796401 n03803284 n03804744 n03814639 n03814906
n03825788 n03832673 n03837869 n03838899 n03840681 n03841143 n03843555 n03854065 n03857828 n03866082
n03868242 n03868863 n03871628 n03873416 n03874293 n03874599 n03876231 n03877472 n03877845 n03884397
n03887697 n03888257 n03888605 n03891251 n03891332 n03895866 n03899768 n03902125 n03903868 n03908618
n03908714 n03916031 n03920288 n03924679 n03929660 n03929855 n03930313 n03930630 n03933933 n03935335
n03937543 n03938244 n03942813 n03944341 n03947888 n03950228 n03954731 n03956157 n03958227 n03961711
n03967562 n03970156 n03976467 n03976657 n03977966 n03980874 n03982430 n03983396 n03991062 n03992509
n03995372 n03998194 n04004767 n04005630 n04008634 n04009552 n04019541 n04023962 n04026417 n04033901
n04033995 n04037443 n04039381 n04040759 n04041544 n04044716 n04049303 n04065272 n04067472 n04069434
n04070727 n04074963 n04081281 n04086273 n04090263 n04099969 n04111531 n04116512 n04118538 n04118776
n04120489 n04125021 n04127249 n04131690 n04133789 n04136333 n04141076 n04141327 n04141975 n04146614
n04147183 n04149813 n04152593 n04153751 n04154565 n04162706 n04179913 n04192698 n04200800 n04201297
n04204238 n04204347 n04208210 n04209133 n04209239 n04228054 n04229816 n04235860 n04238763 n04239074
n04243546 n04251144 n04252077 n04252225 n04254120 n04254680 n04254777 n04258138 n04259630 n04263257
n04264628 n04265275 n04266014 n04270147 n04273569 n04275548 n04277352 n04285008 n04286575 n04296562
n04310018 n04311004 n04311174 n04317175 n04325704 n04326547 n04328186 n04330267 n04332243 n04335435
n04336792 n04344873 n04346328 n04347754 n04350905 n04355338 n04355933 n04356056 n04357314 n04366367
n04367480 n04370456 n04371430 n04371774 n04372370 n04376876 n04380533 n04389033 n04392985 n04398044
n04399382 n04404412 n04409515 n04417672 n04418357 n04423845 n04428191 n04429376 n04435653 n04442312
n04443257 n04447861 n04456115 n04458633 n04461696 n04462240 n04465501 n04467665 n04476259 n04479046
n04482393 n04483307 n04485082 n04486054 n04487081 n04487394 n04493381 n04501370 n04505470 n04507155
n04509417 n04515003 n04517823 n04522168 n04523525 n04525038 n04525305 n04532106 n04532670 n04536866
n04540053 n04542943 n04548280 n04548362 n04550184 n04552348 n04553703 n04554684 n04557648 n04560804
n04562935 n04579145 n04579432 n04584207 n04589890 n04590129 n04591157 n04591713 n04592741 n04596742
n04597913 n04599235 n04604644 n04606251 n04612504 n04613696 n06359193 n06596364 n06785654 n06794110
n06874185 n07248320 n07565083 n07579787 n07583066 n07584110 n07590611 n07613480 n07614500 n07615774
n07684084 n07693725 n07695742 n07697313 n07697537 n07711569 n07714571 n07714990 n07715103 n07716358
n07716906 n07717410 n07717556 n07718472 n07718747 n07720875 n07730033 n07734744 n07742313 n07745940
n07747607 n07749582 n07753113 n07753275 n07753592 n07754684 n07760859 n07768694 n07802026 n07831146
n07836838 n07860988 n07871810 n07873807 n07875152 n07880968 n07892512 n07920052 n07930864 n07932039
n09193705 n09229709 n09246464 n09256479 n09288635 n09332890 n09399592 n09421951 n09428293 n09468604
n09472597 n09835506 n10148035 n10565667 n11879895 n11939491 n12057211 n12144580 n12267677 n12620546
n12768682 n12985857 n12998815 n13037406 n13040303 n13044778 n13052670 n13054560 n13133613 n15075141
"""
WNIDS: tuple[str, ...] = tuple(_WNIDS.split())
WNID_INDEX: dict[str, int] = {wnid: index for index, wnid in enumerate(WNIDS)}

LAYOUT_HELP = (
    "one sub-folder per class, named by its WordNet synset (DIR/n01440764/*.JPEG, as "
    "ImageNet val, ImageNet-Sketch, Stylized-ImageNet) or by its class index 0-999 "
    "(DIR/0/*.jpeg, as ImageNetV2)"
)


class ExampleError(Exception):
    """A problem with the command line, the data or the weights: exit status 2."""


@dataclasses.dataclass(frozen=True)
class Arch:
    """A torchvision classifier, its weights enum and the layer Deephys records."""

    build: Callable[..., nn.Module]
    weights: type[WeightsEnum]
    layer: str
    takes_image_size: bool = False


ARCHS: dict[str, Arch] = {
    # avgpool: the global average pool before ``fc``, (B, C, 1, 1) -> C neurons.
    "resnet18": Arch(models.resnet18, models.ResNet18_Weights, "avgpool"),
    "resnet50": Arch(models.resnet50, models.ResNet50_Weights, "avgpool"),
    # encoder.ln: the encoder's last LayerNorm, (B, 197, 768); the callback averages
    # the 197 tokens (class token + 14 x 14 patches) after ReLU -> 768 neurons.
    "vit_b_16": Arch(models.vit_b_16, models.ViT_B_16_Weights, "encoder.ln", True),
}
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
RANDOM_WARNING = (
    "WARNING: --random-weights: the model is untrained, so its predictions, scores and "
    "Deephys views are meaningless (a smoke test of the pipeline only)"
)


# --- data ---------------------------------------------------------------------


def class_index(folder: str) -> int | None:
    """The 1,000-class index of a class folder: a synset, or an index ``0``-``999``.

    ``None`` for any other name. Index folders are read as integers: ImageNetV2's
    ``10`` is class 10, although ``ImageFolder`` would sort it before ``2``.
    """
    if folder in WNID_INDEX:
        return WNID_INDEX[folder]
    if folder.isdecimal() and folder.isascii() and int(folder) < NUM_CLASSES:
        return int(folder)
    return None


class ImageNetFolder(ImageFolder):
    """An ``ImageFolder`` whose targets are the standard ImageNet class indices.

    Class folders are synsets or class indices (see :func:`class_index`); a set may
    hold any subset of the 1,000 classes. ``classes`` keeps the folder names.

    Raises:
        ExampleError: a folder name that is neither, or no class folders at all.
    """

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        folders = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        if not folders:
            raise ExampleError(
                f"{directory} has no class folders; expected {LAYOUT_HELP}. ImageNet's "
                "validation archive unpacks flat: sort it into synset folders first "
                "(see docs/examples/imagenet.md)"
            )
        unknown = [folder for folder in folders if class_index(folder) is None]
        if unknown:
            raise ExampleError(
                f"{directory} has {len(unknown)} folder(s) that are neither ImageNet "
                f"synsets nor class indices 0-999: {unknown[:5]}; expected {LAYOUT_HELP}"
            )
        return folders, {folder: class_index(folder) for folder in folders}


def image_transform(weights: WeightsEnum) -> Callable:
    """torchvision's evaluation transform of ``weights``: resize, center crop, normalize."""
    return weights.transforms()


def load_set(name: str, root: Path, transform: Callable, limit: int | None) -> Dataset:
    """The images under ``root`` with ImageNet labels; ``limit`` keeps an even spread."""
    if not root.is_dir():
        raise ExampleError(f"the {name!r} set: {root} is not a directory; expected {LAYOUT_HELP}")
    try:
        dataset = ImageNetFolder(os.fspath(root), transform=transform)
    except (ExampleError, FileNotFoundError) as error:  # FileNotFoundError: no images
        raise ExampleError(f"the {name!r} set: {error}") from None
    return evenly_spread(dataset, limit)


def evenly_spread(dataset: Dataset, limit: int | None) -> Dataset:
    """At most ``limit`` images, evenly spread over ``dataset`` (which is class-sorted)."""
    size = len(dataset)  # type: ignore[arg-type]
    if limit is None or size <= limit:
        return dataset
    positions = np.unique(np.linspace(0, size - 1, limit).round().astype(int))
    return Subset(dataset, positions.tolist())


def data_loaders(
    sets: Mapping[str, Dataset], batch_size: int, num_workers: int
) -> dict[str, DataLoader]:
    """One unshuffled loader per set (the callback records images in loader order)."""
    return {
        name: DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        for name, dataset in sets.items()
    }


# --- model --------------------------------------------------------------------


def torchvision_weights(arch: Arch, name: str) -> WeightsEnum:
    """The member ``name`` of the architecture's weights enum (``IMAGENET1K_V1`` ...)."""
    try:
        return arch.weights[name]
    except KeyError:
        choices = ", ".join(arch.weights.__members__)
        raise ExampleError(
            f"--torchvision-weights {name}: {arch.weights.__name__} has {choices}"
        ) from None


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where ``torchvision`` keeps ``weights`` once downloaded: its URL's file name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def find_weights(arch_name: str, weights: WeightsEnum, path: str | None) -> Path:
    """The state_dict file to load: ``path`` or torchvision's cached file; never downloads."""
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ExampleError(f"--weights {path}: no such file")
        return file
    cached = cached_weights_path(weights)
    if cached.is_file():
        return cached
    raise ExampleError(
        f"no {arch_name} weights found, and this script never downloads. Either pass "
        f"--weights PATH (a state_dict .pth file), or put torchvision's file at {cached} "
        f"(from {weights.url}; torchvision stores it there when it downloads "
        f"{weights}). For a smoke test without weights, --random-weights."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict, also from ``{"state_dict": ...}``/``{"model": ...}`` files."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        raise ExampleError(f"cannot read {path} as a state_dict: {error}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ExampleError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def build_network(arch: Arch, weights: WeightsEnum) -> nn.Module:
    """The architecture with freshly initialised parameters (no download)."""
    kwargs = {"image_size": weights.meta["min_size"][0]} if arch.takes_image_size else {}
    return arch.build(weights=None, num_classes=NUM_CLASSES, **kwargs)


def load_network(arch_name: str, weights: WeightsEnum, path: Path) -> nn.Module:
    """The architecture with the parameters of the state_dict at ``path``."""
    network = build_network(ARCHS[arch_name], weights)
    try:
        network.load_state_dict(read_state_dict(path))
    except RuntimeError as error:
        raise ExampleError(f"{path} does not hold {arch_name} weights: {error}") from None
    return network


class ImageNetClassifier(L.LightningModule):
    """A torchvision classifier for ``trainer.validate``; logs top-1 accuracy.

    The classifier is the ``network`` attribute, so its modules are ``network.avgpool``,
    ``network.encoder.ln``, ... in ``named_modules()`` and in the log.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        x, y = batch
        logits = self(x)  # DeephysCallback takes predictions from forward's output
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        self.log("top1", accuracy, batch_size=len(y), sync_dist=True)


# --- run ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What one run records; see the command-line flags."""

    arch: str
    sets: dict[str, Path]  # the in-distribution set first
    logdir: Path
    weights_name: str = DEFAULT_WEIGHTS
    weights_path: str | None = None
    random_weights: bool = False
    layer: str | None = None
    batch_size: int = 64
    num_workers: int = 0
    max_images: int | None = None
    limit_images: int | None = None
    thumbnail_size: int = 64
    accelerator: str = "auto"
    devices: str = "1"
    precision: str = "32-true"
    seed: int = 0


def prepare_model(config: RunConfig, weights: WeightsEnum) -> ImageNetClassifier:
    """The classifier with loaded weights, or with a seeded random init."""
    if config.random_weights:
        torch.manual_seed(config.seed)
        return ImageNetClassifier(build_network(ARCHS[config.arch], weights))
    path = find_weights(config.arch, weights, config.weights_path)
    print(f"{config.arch}: weights from {path}", flush=True)
    return ImageNetClassifier(load_network(config.arch, weights, path))


def make_callback(config: RunConfig, weights: WeightsEnum) -> DeephysCallback:
    """DeephysCallback on the penultimate layer, with ImageNet's class names."""
    transform = image_transform(weights)
    return DeephysCallback(
        layer=f"network.{config.layer or ARCHS[config.arch].layer}",
        class_names=list(weights.meta["categories"]),
        ind=next(iter(config.sets)),
        max_images=config.max_images,
        thumbnail_size=config.thumbnail_size,
        denormalize=(list(transform.mean), list(transform.std)),
    )


def run(config: RunConfig) -> str | None:
    """Validate on every set with DeephysCallback; the run's log directory on rank zero."""
    weights = torchvision_weights(ARCHS[config.arch], config.weights_name)
    transform = image_transform(weights)
    sets = {
        name: load_set(name, root, transform, config.limit_images)
        for name, root in config.sets.items()
    }
    model = prepare_model(config, weights)
    logger = TensorBoardLogger(os.fspath(config.logdir), name=f"imagenet_{config.arch}")
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        precision=config.precision,
        logger=logger,
        callbacks=[make_callback(config, weights)],
        enable_model_summary=False,
    )
    try:
        trainer.validate(
            model, dataloaders=data_loaders(sets, config.batch_size, config.num_workers)
        )
    except MisconfigurationException as error:  # e.g. a --layer that is not a module
        raise ExampleError(str(error)) from None
    return logger.log_dir if trainer.is_global_zero else None


def print_scores(run_dir: str, logdir: Path, random_weights: bool) -> None:
    """The score table of the run (novelty, spurious score, activation ratio per OOD set)."""
    name = os.path.relpath(run_dir, logdir)  # the run as TensorBoard names it, not "."
    rows = [dataclasses.replace(row, run=name) for row in score_table(run_dir)]
    if rows:
        print(format_table(rows), flush=True)
    else:
        print("no OOD set (--ood NAME=DIR), so no scores", flush=True)
    if random_weights:
        print(RANDOM_WARNING, flush=True)


# --- command line -------------------------------------------------------------


def _named_dir(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(directory).expanduser()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Record a pretrained ImageNet classifier's penultimate layer on "
        "ImageNet val (in-distribution) and OOD sets with DeephysCallback, then print "
        f"the scores. Every set is a folder with {LAYOUT_HELP}.",
    )
    parser.add_argument(
        "--imagenet-val",
        required=True,
        type=Path,
        metavar="DIR",
        help="ImageNet val (the in-distribution set), one folder per synset",
    )
    parser.add_argument(
        "--ind-name",
        default=IND_NAME,
        metavar="NAME",
        help=f"name of that set in the log (default {IND_NAME})",
    )
    parser.add_argument(
        "--ood",
        action="append",
        default=[],
        type=_named_dir,
        metavar="NAME=DIR",
        help="an OOD set, e.g. imagenetv2=DIR, sketch=DIR, stylized=DIR (repeatable)",
    )
    parser.add_argument(
        "--arch", choices=sorted(ARCHS), default="resnet18", help="default resnet18"
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        metavar="PATH",
        help="a state_dict .pth file (default: torchvision's cached file)",
    )
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained model, for smoke tests: the results are meaningless",
    )
    parser.add_argument(
        "--torchvision-weights",
        default=DEFAULT_WEIGHTS,
        metavar="NAME",
        help="which torchvision weights: names the cached file and the transform "
        f"(default {DEFAULT_WEIGHTS}; e.g. IMAGENET1K_V2 for resnet50)",
    )
    parser.add_argument(
        "--layer",
        metavar="NAME",
        help="record this module of the torchvision model instead (a name from its "
        "named_modules(), e.g. layer4); logged as network.NAME",
    )
    parser.add_argument(
        "--logdir",
        type=Path,
        default=Path("lightning_logs"),
        metavar="DIR",
        help="TensorBoard log folder (default lightning_logs)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=64, metavar="B", help="per device (default 64)"
    )
    workers = min(8, os.cpu_count() or 1)
    parser.add_argument(
        "--num-workers",
        type=int,
        default=workers,
        metavar="N",
        help=f"data-loader processes per set (default {workers})",
    )
    parser.add_argument(
        "--max-images",
        type=_positive,
        metavar="N",
        help="record an evenly spread N images per set (all are still evaluated)",
    )
    parser.add_argument(
        "--limit-images",
        type=_positive,
        metavar="N",
        help="evaluate only an evenly spread N images per set (a quick look)",
    )
    parser.add_argument(
        "--thumbnail-size",
        type=_positive,
        default=64,
        metavar="S",
        help="longest side of the thumbnails in px (default 64)",
    )
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (default auto)")
    parser.add_argument("--devices", default="1", help="as Lightning's Trainer (default 1)")
    parser.add_argument(
        "--precision", default="32-true", help="as Lightning's Trainer, e.g. bf16-mixed"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights (default 0)")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Check the flags that argparse cannot and gather them."""
    names = [args.ind_name] + [name for name, _ in args.ood]
    if len(set(names)) != len(names):
        raise ExampleError(f"the set names must be unique, got {names} (--ind-name, --ood)")
    return RunConfig(
        arch=args.arch,
        sets={args.ind_name: args.imagenet_val.expanduser(), **dict(args.ood)},
        logdir=args.logdir,
        weights_name=args.torchvision_weights,
        weights_path=args.weights,
        random_weights=args.random_weights,
        layer=args.layer,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_images=args.max_images,
        limit_images=args.limit_images,
        thumbnail_size=args.thumbnail_size,
        accelerator=args.accelerator,
        devices=args.devices,
        precision=args.precision,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if config.random_weights:
            print(RANDOM_WARNING, flush=True)
        run_dir = run(config)
    except ExampleError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if run_dir is not None:
        print(f"Deephys data logged to {run_dir}", flush=True)
        print_scores(run_dir, config.logdir, config.random_weights)
        print(f"view it with: tensorboard --logdir {config.logdir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
