"""Stable Diffusion in miniature (lesson 11): caption rules, the tokenizer, CLIP's contrastive loss against a loop,
cross-attention against scaled_dot_product_attention, the zero start of a text UNet, and the text-to-image
pipeline with tiny random models, its prompts checked before sampling."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffedu import adherence, captions, checkpoint, pretrained, report
from diffedu.captions import COLOURS, NONE, caption
from diffedu.errors import CheckpointError, DiffeduError
from diffedu.nets import CrossAttention, UNet, UNetConfig, text_conditioned
from diffedu.pipelines import Consistency, Diffusion, FlowMatching, LatentDiffusion, TextToImage, load_pipeline
from diffedu.samplers import PromptGuided
from diffedu.schedules import Schedule
from diffedu.text import CLIP, CLIPConfig, Tokenizer, contrastive_loss, text_fingerprint
from diffedu.training import text_eps_loss
from diffedu.vae import VAE, VAEConfig

BASE = UNetConfig(
    in_channels=4,
    image_size=8,
    channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    num_classes=10,
    dropout=0.0,
)
RED, BLUE = COLOURS.index("red"), COLOURS.index("blue")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and leaves the other core alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_base(seed=0) -> UNet:
    torch.manual_seed(seed)
    unet = UNet(BASE).eval()
    nn.init.normal_(unet.head[-1].weight, std=0.1)  # not the zero start: its predictions must be worth comparing
    return unet


def tiny_text_unet(seed=0, awake=True) -> UNet:
    """A text UNet from a tiny base; `awake`: its cross-attention's out projections random, so prompts matter."""
    unet = text_conditioned(tiny_base(seed), 6).eval()
    for module in unet.modules() if awake else []:
        if isinstance(module, CrossAttention):
            nn.init.normal_(module.out.weight, std=0.3)
    return unet


def tiny_clip(seed=0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(CLIPConfig(width=6, layers=1, heads=2, image_channels=4, embed=6)).eval().requires_grad_(False)


def solid(*rgb, n=2) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8)[None, :, None, None].expand(n, 3, 32, 32).clone()


# Captions


@pytest.mark.parametrize(
    "rgb, word", [((255, 0, 0), "red"), ((0, 200, 0), "green"), ((0, 0, 255), "blue"), ((255, 255, 0), "yellow")]
)
def test_a_solid_colour_reads_as_its_word_in_uint8_and_in_floats(rgb, word):
    images = solid(*rgb)
    colour, _ = captions.attributes(images)
    assert colour.tolist() == [COLOURS.index(word)] * 2
    assert torch.equal(captions.attributes(images.float() / 127.5 - 1)[0], colour)


def test_white_grey_and_brightness():
    white, grey, black, light = solid(255, 255, 255), solid(128, 128, 128), solid(10, 10, 10), solid(245, 245, 245)
    images = torch.cat([white, grey, black, light])
    colour, brightness = captions.attributes(images)
    assert colour.tolist() == [COLOURS.index("white")] * 2 + [NONE] * 4 + [COLOURS.index("white")] * 2
    assert brightness.tolist() == [1] * 2 + [NONE] * 2 + [0] * 2 + [1] * 2
    assert [captions.BRIGHTNESS[k] for k in (0, 1)] == ["dark", "bright"]
    floats = captions.attributes(images.float() / 127.5 - 1)
    assert torch.equal(floats[0], colour) and torch.equal(floats[1], brightness)


def test_only_the_centre_counts_and_a_split_centre_gets_no_colour():
    framed = solid(0, 0, 255)
    framed[..., 8:24, 8:24] = solid(255, 0, 0)[..., :16, :16]  # a red centre, a blue border (3/4 of the pixels)
    split = solid(128, 128, 128)  # a centre of four colours, a quarter each
    split[..., 8:16, 8:16], split[..., 8:16, 16:24] = solid(255, 0, 0)[..., :8, :8], solid(0, 200, 0)[..., :8, :8]
    split[..., 16:24, 8:16], split[..., 16:24, 16:24] = solid(0, 0, 255)[..., :8, :8], solid(255, 255, 0)[..., :8, :8]
    assert captions.colour_votes(split)[0].max().item() == pytest.approx(0.25) and captions.CONFIDENT > 0.25
    assert captions.attributes(torch.cat([framed, split]))[0].tolist() == [RED] * 2 + [NONE] * 2


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 4, 32, 32), (2, 3, 32)])
def test_attributes_refuse_other_shapes(shape):
    with pytest.raises(DiffeduError, match="RGB images"):
        captions.attributes(torch.zeros(shape, dtype=torch.uint8))


def test_captions_read_as_english():
    orange, white = COLOURS.index("orange"), COLOURS.index("white")
    assert caption(1, colour=RED, brightness=0) == "a dark photo of a red car"
    assert caption(1, colour=orange) == "a photo of an orange car"
    assert caption(0) == "a photo of an airplane"
    assert caption(0, brightness=1, template=1) == "a bright picture of an airplane"
    assert caption(8, colour=white, brightness=0, template=1) == "a dark picture of a white ship"
    assert caption(1, colour=orange, brightness=0, template=2) == "an orange car"  # the object alone: no brightness
    assert caption(3, template=2) == "a cat"


def test_random_captions_never_name_a_held_out_pair_and_are_seeded():
    pairs = [(captions.CLASS_WORDS.index(c), COLOURS.index(k)) for c, k in captions.HELD_OUT] + [(1, RED)]
    labels, colours = torch.tensor([y for y, _ in pairs] * 100), torch.tensor([k for _, k in pairs] * 100)
    brightness = torch.zeros_like(labels)
    texts = captions.random_captions(labels, colours, brightness, torch.Generator().manual_seed(0))
    for (label, colour), text in zip(pairs * 100, texts):
        assert captions.CLASS_WORDS[label] in text
        if captions.held_out(label, colour):
            assert COLOURS[colour] not in text.split()
    named = sum("red car" in text for text in texts)
    assert 25 <= named <= 75  # kept about half the time (100 draws)
    assert sum(text.startswith("a dark") for text in texts) > 0
    again = captions.random_captions(labels, colours, brightness, torch.Generator().manual_seed(0))
    other = captions.random_captions(labels, colours, brightness, torch.Generator().manual_seed(1))
    assert again == texts != other


def test_every_caption_word_is_in_the_vocabulary():
    vocabulary = set(captions.vocabulary())
    words = {
        word
        for y in range(10)
        for k in (NONE, *range(len(COLOURS)))
        for b in (NONE, 0, 1)
        for template in range(len(captions.TEMPLATES))
        for word in caption(y, k, b, template).split()
    }
    assert words == vocabulary


# The tokenizer


def test_tokenizer_round_trip_padding_and_mask():
    tokenizer = Tokenizer(captions.vocabulary(), context=16)
    texts = ["a red car", "a dark photo of a red car", "an orange car", "a bright picture of a white ship", ""]
    ids, mask = tokenizer(texts)
    assert ids.shape == mask.shape == (5, 16) and mask.dtype == torch.bool
    pad, end = tokenizer.index["<pad>"], tokenizer.index["<end>"]
    for text, row, real in zip(texts, ids, mask):
        n = len(text.split())
        assert tokenizer.decode(row) == text
        assert (row == end).sum() == 1 and row[n] == end and (row[n + 1 :] == pad).all()
        assert real.tolist() == [True] * (n + 1) + [False] * (15 - n)
    assert torch.equal(tokenizer(["A Red Car."])[0], ids[:1])  # case and a full stop tolerated


def test_tokenizer_errors_name_the_problem():
    tokenizer = Tokenizer(captions.vocabulary(), context=16)
    with pytest.raises(DiffeduError, match="'reed'.*nearest.*red"):
        tokenizer.encode("a reed car")
    with pytest.raises(DiffeduError, match="'<end>'"):
        tokenizer.encode("a <end> car")
    assert len(tokenizer.split(" ".join(["a"] * 15))) == 15  # 15 words and the end token fill the 16 places
    with pytest.raises(DiffeduError, match="16 words.*at most 15"):
        tokenizer.encode(" ".join(["a"] * 16))
    with pytest.raises(DiffeduError, match="string"):
        tokenizer([5])


# The contrastive loss


def loop_loss(image, text, scale, same) -> float:
    """Soft-target cross-entropy row by row, images to captions and captions to images, averaged; plain floats."""
    n = len(image)
    image, text = [v.tolist() for v in image], [v.tolist() for v in text]
    unit = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in image + text]
    logits = [[scale * sum(a * b for a, b in zip(unit[i], unit[n + j])) for j in range(n)] for i in range(n)]
    total = 0.0
    for rows in (logits, [list(col) for col in zip(*logits)]):  # the images' rows, then the captions'
        for i, row in enumerate(rows):
            positives = [j for j in range(n) if same[i][j]]
            log_sum = math.log(sum(math.exp(x) for x in row))
            total += sum(log_sum - row[j] for j in positives) / len(positives)
    return total / (2 * n)


def groups(names: str) -> torch.Tensor:
    """same[i, j]: captions i and j (one letter each) are the same words."""
    return torch.tensor([[a == b for b in names] for a in names])


@pytest.mark.parametrize("names, scale", [("abcd", 1.0), ("aabccc", 14.3), ("abab", 3.0)])
def test_contrastive_loss_equals_a_loop(names, scale):
    torch.manual_seed(len(names))
    image, text, same = torch.randn(len(names), 5), torch.randn(len(names), 5), groups(names)
    loss = contrastive_loss(image, text, scale, same)
    assert loss.item() == pytest.approx(loop_loss(image, text, scale, same), rel=1e-5)
    diagonal = loop_loss(image, text, scale, groups("abcdef"[: len(names)]))
    assert contrastive_loss(image, text, scale).item() == pytest.approx(diagonal, rel=1e-5)
    lengths = torch.rand(len(names), 1) + 0.1  # only directions count
    assert torch.allclose(contrastive_loss(lengths * image, text / lengths, scale, same), loss)


def test_same_matters_only_where_identical_captions_could_embed_apart():
    names = "aabccc"
    same, sizes = groups(names), torch.tensor([2.0, 2, 1, 3, 3, 3])
    entropy = sizes.log().mean().item()  # the targets' entropy: the loss's floor with `same`
    perfect = torch.eye(3)[torch.tensor(["abc".index(c) for c in names])]  # each caption its own direction
    assert contrastive_loss(perfect, perfect, 100.0, same).item() == pytest.approx(entropy, abs=1e-4)
    # Identical captions embed identically (the text encoder is deterministic): then `same` changes nothing at all,
    # with perfect embeddings or random images, and without it the loss cannot go below the same floor either
    assert contrastive_loss(perfect, perfect, 100.0).item() == pytest.approx(entropy, abs=1e-4)
    torch.manual_seed(0)
    image, text = torch.randn(6, 5), torch.randn(3, 5)[torch.tensor(["abc".index(c) for c in names])]
    assert contrastive_loss(image, text, 5.0, same).item() == pytest.approx(contrastive_loss(image, text, 5.0).item())
    # Where duplicates are told apart (each image only its own copy's direction), `same` is what refuses to reward it
    apart = torch.eye(6)
    assert contrastive_loss(apart, apart, 100.0).item() < 1e-4
    assert contrastive_loss(apart, apart, 100.0, same).item() > 10


# Cross-attention


def by_hand(module: CrossAttention, x, context, mask) -> torch.Tensor:
    b, c, h, w = x.shape
    heads, d = module.heads, c // module.heads
    q = torch.einsum("oc,bcp->bop", module.q.weight[:, :, 0, 0], module.norm(x).flatten(2)) + module.q.bias[:, None]
    kv = context @ module.kv.weight.T + module.kv.bias  # (b, L, 2c): the keys' c numbers, then the values'
    q = q.reshape(b, heads, d, h * w).transpose(-1, -2)
    k, v = (kv[..., i * c : (i + 1) * c].reshape(b, -1, heads, d).transpose(1, 2) for i in (0, 1))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    y = y.transpose(-1, -2).reshape(b, c, h * w)
    out = torch.einsum("oc,bcp->bop", module.out.weight[:, :, 0, 0], y) + module.out.bias[:, None]
    return x + out.reshape(b, c, h, w)


@torch.no_grad()
def test_cross_attention_is_masked_multi_head_attention_and_records_its_weights():
    torch.manual_seed(0)
    module = CrossAttention(channels=8, context_dim=6, heads=2)
    x, context = torch.randn(2, 8, 4, 4), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    assert torch.equal(module(x, context, mask), x)  # zero-initialised out projection: the identity at first
    nn.init.normal_(module.out.weight), nn.init.normal_(module.out.bias)
    expected = by_hand(module, x, context, mask)
    assert torch.allclose(module(x, context, mask), expected, atol=1e-5)
    changed = context.clone()
    changed[0, 3:] = 100 * torch.randn(2, 6)  # the padding of the first prompt
    assert torch.allclose(module(x, changed, mask), expected, atol=1e-5)
    assert not torch.allclose(module(x, changed, torch.ones_like(mask)), expected, atol=1e-3)
    module.maps = []
    assert torch.allclose(module(x, context, mask), expected, atol=1e-5)  # the spelled-out path, recording
    (weights,) = module.maps
    assert weights.shape == (2, 2, 16, 5)
    assert (weights[0, ..., 3:] == 0).all() and (weights[0, ..., :3] > 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 16))


# The text UNet


@torch.no_grad()
def test_a_text_unet_starts_as_its_base_with_no_label_for_any_prompt():
    base, x, t = tiny_base(), torch.randn(3, 4, 8, 8), torch.tensor([999, 500, 3])
    unet = tiny_text_unet(awake=False)
    assert unet.config.num_classes == 0 and unet.config.context_dim == 6 and not hasattr(unet, "class_emb")
    unconditional = base(x, t, None)
    assert not torch.allclose(unconditional, base(x, t, torch.tensor([1, 2, 3])), atol=1e-4)
    for seed, tokens in ((0, 4), (1, 16)):
        torch.manual_seed(seed)
        context, mask = 3 * torch.randn(3, tokens, 6), torch.rand(3, tokens) < 0.6
        mask[:, 0] = True
        assert torch.allclose(unet(x, t, context=context, mask=mask), unconditional, atol=1e-5)
    awake = tiny_text_unet(awake=True)  # the same, once its cross-attention has weights, reads the prompt
    assert not torch.allclose(awake(x, t, context=context, mask=mask), unconditional, atol=1e-3)


def test_unets_check_their_conditioning():
    unet, x = tiny_text_unet(), torch.zeros(2, 4, 8, 8)
    context, mask = torch.zeros(2, 5, 6), torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(DiffeduError, match="text-conditioned: give"):
        unet(x, 0)
    with pytest.raises(DiffeduError, match="text-conditioned: give"):
        unet(x, 0, context=context)
    for wrong in ((torch.zeros(2, 5, 7), mask), (torch.zeros(3, 5, 6), mask[[0, 1, 1]]), (context, mask[:, :4])):
        with pytest.raises(DiffeduError, match=r"context must be \(2, tokens, 6\)"):
            unet(x, 0, context=wrong[0], mask=wrong[1])
    with pytest.raises(DiffeduError, match="not class-conditional"):
        unet(x, 0, torch.tensor([1, 2]), context=context, mask=mask)
    with pytest.raises(DiffeduError, match="not text-conditioned"):
        tiny_base()(x, 0, context=context, mask=mask)
    with pytest.raises(DiffeduError, match="classes or on text"):
        UNetConfig(num_classes=10, context_dim=6)
    with pytest.raises(DiffeduError, match="context_dim"):
        UNetConfig(context_dim=-1)


def test_a_short_fine_tuning_lowers_the_loss_through_the_text():
    clip, unet, schedule = tiny_clip(), tiny_text_unet(awake=False).train(), Schedule.by_name("linear")
    frozen = copy.deepcopy(clip.state_dict())
    torch.manual_seed(0)
    batch = torch.randn(8, 4, 8, 8), torch.stack([torch.arange(8), torch.arange(8) % 7, torch.arange(8) % 3 - 1], 1)

    def loss():  # the same captions, dropped prompts, timesteps and noise each time: only the model changes
        torch.manual_seed(1)
        return text_eps_loss(unet, batch, schedule, clip)

    with torch.no_grad():
        before = loss().item()
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3)
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.9 * before
    assert all(torch.equal(v, clip.state_dict()[k]) for k, v in frozen.items())  # the text encoder stays frozen
    cross = [m for m in unet.modules() if isinstance(m, CrossAttention)]
    assert all(m.out.weight.abs().max() > 0 for m in cross)  # the text path learned, from its zero start
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    with torch.no_grad():
        red, blue = (unet.eval()(x, t, None, *clip.encode_prompts([p] * 2)) for p in ("a red car", "a blue dog"))
    assert not torch.allclose(red, blue, atol=1e-4)


# CLIP as a checkpoint


def test_clip_checkpoints_round_trip_and_are_refused_where_a_diffusion_model_is_wanted(tmp_path):
    clip = tiny_clip()
    path = checkpoint.save_model(tmp_path / "clip", clip)
    assert checkpoint.read_meta(path)["kind"] == "clip"
    loaded = checkpoint.load_model(path)
    assert isinstance(loaded, CLIP) and loaded.tokenizer.words == clip.tokenizer.words
    prompts = ["a red car", "a dark photo of an airplane", ""]
    with torch.no_grad():
        assert torch.equal(loaded.embed_text(prompts), clip.embed_text(prompts))
    frozen = pretrained.load_clip(str(path))
    assert not any(p.requires_grad for p in frozen.parameters())
    assert text_fingerprint(frozen) == text_fingerprint(clip)
    with torch.no_grad():
        frozen.image.proj.weight.add_(1)
        assert text_fingerprint(frozen) == text_fingerprint(clip)  # only the text encoder is read
        frozen.text.norm.weight.add_(1)
        assert text_fingerprint(frozen) != text_fingerprint(clip)
    unet = checkpoint.save_model(tmp_path / "unet", tiny_base())
    with pytest.raises(DiffeduError, match="not a text encoder"):
        pretrained.load_clip(str(unet))
    with pytest.raises(CheckpointError, match="is a text encoder"):
        load_pipeline(path, device="cpu")


# The text-to-image pipeline


def tiny_pipeline(seed=0) -> TextToImage:
    clip, unet = tiny_clip(seed), tiny_text_unet(seed)
    torch.manual_seed(seed)
    return TextToImage(VAE(VAEConfig(channels=8)), unet, Schedule.by_name("linear"), clip)


@torch.no_grad()
def test_prompt_guided_is_the_guided_mix_of_two_predictions():
    unet, clip = tiny_text_unet(), tiny_clip()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([700, 20])
    prompt, empty = clip.encode_prompts(["a red car", "a dark photo of a white ship"]), clip.encode_prompts([""] * 2)
    eps_c, eps_u = unet(x, t, context=prompt[0], mask=prompt[1]), unet(x, t, context=empty[0], mask=empty[1])
    assert not torch.allclose(eps_c, eps_u, atol=1e-4)
    assert torch.equal(PromptGuided(unet, prompt, empty, 0.0)(x, t), eps_u)
    assert torch.equal(PromptGuided(unet, prompt, empty, 1.0)(x, t), eps_c)
    assert torch.allclose(PromptGuided(unet, prompt, empty, 3.0)(x, t), eps_u + 3 * (eps_c - eps_u), atol=1e-5)


def test_text_to_image_samples_prompts_reproducibly():
    pipe = tiny_pipeline()
    images = pipe.sample(2, 2, prompt="a red car", guidance=3, generator=0, progress=False)
    assert images.shape == (2, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(pipe.sample(2, 2, prompt="a red car", guidance=3, generator=0, progress=False), images)
    each = pipe.sample(2, 2, prompt=["a red car", "a blue dog"], guidance=3, generator=0, progress=False)
    assert torch.allclose(each[0], images[0], atol=1e-5)
    assert not torch.allclose(each[1], images[1], atol=1e-3)  # the prompt is read
    assert pipe.words == captions.vocabulary()


def test_text_to_image_checks_prompts_before_sampling(capsys):
    pipe = tiny_pipeline()
    calls = []
    pipe.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    wrong = {
        "one per image, not 3": dict(prompt=["a red car"] * 3),
        "got 5": dict(prompt=5),
        "one string per image, got": dict(prompt=["a red car", 5]),
        "'reed'": dict(prompt="a reed car"),
        "at most 15": dict(prompt=" ".join(["a"] * 16)),
        "prompts, not classes": dict(prompt="a red car", classes=1),
        "give a prompt too": dict(prompt="", guidance=3),
    }
    for message, kwargs in wrong.items():
        with pytest.raises(DiffeduError, match=message):
            pipe.sample(2, 2, progress=False, **kwargs)
    with pytest.raises(DiffeduError, match="give a prompt too"):
        pipe.sample(2, 2, guidance=3, progress=False)
    assert calls == []
    pipe.sample(1, 1, progress=False)
    pipe.sample(1, 1, prompt="", progress=False)
    assert capsys.readouterr().out.count("the empty prompt") == 1
    with pytest.raises(DiffeduError, match="width 6.*7 wide"):
        TextToImage(pipe.vae, pipe.unet, pipe.schedule, CLIP(CLIPConfig(width=7, layers=1, heads=1, image_channels=4)))


def test_pipelines_without_text_refuse_a_prompt():
    schedule, vae = Schedule.by_name("linear"), VAE(VAEConfig(channels=8))
    pixel = UNet(UNetConfig(image_size=8, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()))
    for pipe in (LatentDiffusion(vae, tiny_base(), schedule), Diffusion(pixel, schedule), FlowMatching(pixel)):
        with pytest.raises(DiffeduError, match="no text conditioning"):
            pipe.sample(1, 1, prompt="a red car", progress=False)
    with pytest.raises(DiffeduError, match="takes no prompt"):
        Consistency(pixel).sample(1, 1, prompt="a red car", progress=False)


def test_attention_maps_are_per_word_distributions_and_recording_stops():
    pipe = tiny_pipeline()
    layers = [m for m in pipe.unet.modules() if isinstance(m, CrossAttention)]
    images, maps, words = pipe.attention_maps("a red car", n=2, guidance=3, steps=2, generator=0)
    assert words == ["a", "red", "car"] and images.shape == (2, 3, 32, 32) and maps.shape == (2, 3, 8, 8)
    assert (maps >= 0).all() and torch.allclose(maps.flatten(2).sum(-1), torch.ones(2, 3))
    again = pipe.sample(2, 2, prompt="a red car", guidance=3, generator=0, progress=False)
    assert torch.allclose(images, again, atol=1e-4)  # recording spells attention out: the same images
    assert all(layer.maps is None for layer in layers)
    with pytest.raises(DiffeduError, match="guidance"):
        pipe.attention_maps("a red car", n=1, guidance=-1, steps=1)  # fails while recording
    assert all(layer.maps is None for layer in layers)


def test_attention_maps_at_guidance_0_are_refused():
    # at w = 0 only the empty prompt is run: its weights would be read as the prompt's words'
    with pytest.raises(DiffeduError, match="w = 0"):
        tiny_pipeline().attention_maps("a red car", n=1, guidance=0, steps=1, generator=0)


# Prompt adherence, in numbers and in words


def cell(accuracy, se=0.05, **more) -> dict:
    return {"accuracy": accuracy, "se": se, "n": 100, **more}


def table(seen=0.6, held_out=0.2, fid=-10.0) -> dict:
    def colour_row(accuracy):
        return {
            "class": cell(0.5),
            "colour": cell(accuracy, base_rate=0.2, lift=accuracy / 0.2),
            "all": cell(accuracy / 2),
        }

    row = {
        "guidance": 3.0,
        "class-only prompts": {"class": cell(0.7), "all": cell(0.7)},
        "colour, seen pairs": colour_row(seen),
        "colour, held-out pairs": colour_row(held_out),
        "brightness": {"class": cell(0.5), "brightness": cell(0.8, base_rate=0.3, lift=0.8 / 0.3), "all": cell(0.4)},
        "baseline": {"class": cell(0.7)},
        "paired": {"fid": fid, "fid_se": 1.0, "kid": fid / 1000, "kid_se": 0.001},
    }
    ceiling = {"real test images": cell(0.9, 0.01), "VAE reconstructions": cell(0.85, 0.01)}
    return {"scales": {"0.0": {**copy.deepcopy(row), "guidance": 0.0}, "3.0": row}, "ceiling": ceiling}


def test_share_and_base_rates():
    result = adherence.share(torch.tensor([True, False, True, True]))
    assert result == {"accuracy": 0.75, "se": pytest.approx(math.sqrt(0.75 * 0.25 / 4)), "n": 4}
    labels = torch.arange(20) % 10
    images = solid(128, 128, 128, n=20)
    images[labels == 0], images[labels == 1] = solid(255, 0, 0), solid(0, 0, 255)
    images[labels == 2] = torch.cat([solid(0, 0, 255, n=1), solid(245, 245, 245, n=1)])
    rates = adherence.base_rates(images, labels)
    assert rates["colour"].shape == (10, len(COLOURS)) and rates["brightness"].shape == (10, 2)
    assert rates["colour"][0, RED] == 1 and rates["colour"][0, BLUE] == 0 and rates["colour"][1, BLUE] == 1
    assert rates["colour"][2, BLUE] == 0.5 and rates["colour"][3].sum() == 0
    assert rates["brightness"][2].tolist() == [0.5, 0.5] and rates["brightness"][3].sum() == 0


def test_accuracy_verdict_follows_two_standard_errors():
    b = cell(0.5, 0.03)
    se = math.hypot(0.04, 0.03)  # 0.05
    assert report.accuracy_verdict(cell(0.5 + 1.99 * se, 0.04), b) == "level with"
    assert report.accuracy_verdict(cell(0.5 - 1.99 * se, 0.04), b) == "level with"
    assert report.accuracy_verdict(cell(0.5 + 2.01 * se, 0.04), b) == "above"
    assert report.accuracy_verdict(cell(0.5 - 2.01 * se, 0.04), b) == "below"


def test_in_words_follows_the_numbers():
    said = report.adherence_in_words(table(seen=0.6, held_out=0.2, fid=-10.0), 3.0)
    assert said.startswith("At w = 3, class accuracy on class-only prompts is 70.0% ± 5.0, level with")
    assert "better on both (FID -10.0 ± 1.0, KID x 1000 -10.0 ± 1.0)" in said
    assert "60.0% ± 5.0 of the images have it: 3.0 times the 20% of training images" in said
    assert "Held-out pairs are below seen ones on colour, and below them on class and colour together" in said
    flipped = report.adherence_in_words(table(seen=0.6, held_out=0.9, fid=1.0), 3.0)
    assert "Held-out pairs are above seen ones on colour, and above them" in flipped
    assert "level on both" in flipped
    assert "level with seen ones" in report.adherence_in_words(table(seen=0.6, held_out=0.55), 3.0)
    assert "worse on both" in report.adherence_in_words(table(fid=10.0), 3.0)
    plain = table()
    del plain["scales"]["3.0"]["baseline"], plain["scales"]["3.0"]["paired"]
    assert "class-conditional" not in report.adherence_in_words(plain, 3)


def test_in_markdown_has_a_row_per_scale_and_prompt_set():
    lines = report.adherence_table(table()).split("\n")
    assert len(lines) == 2 + 2 * 4 + 2 and all(line.count("|") == 7 for line in lines)
    assert lines[2].startswith("| 0 | class-only prompts | 70.0% ± 5.0 |")
    assert "| 3 | colour, seen pairs | 50.0% ± 5.0 | 60.0% ± 5.0 (20%) |  | 30.0% ± 5.0 |" in lines
    assert "| 3 | brightness | 50.0% ± 5.0 |  | 80.0% ± 5.0 (30%) | 40.0% ± 5.0 |" in lines
    assert lines[-1] == "|  | VAE reconstructions | 85.0% ± 1.0 |  |  |  |"


# The command line


@pytest.fixture
def saved_text_model(tmp_path):
    """A tiny text-to-image checkpoint as a run exports it: naming its CLIP (by path), its VAE and the fingerprints."""
    from diffedu.latent import vae_fingerprint

    clip, unet, vae = tiny_clip(), tiny_text_unet(), pretrained.load("vae-cifar10-gan")
    checkpoint.save_model(tmp_path / "clip", clip)
    meta = dict(schedule="linear", T=1000, vae="vae-cifar10-gan", vae_fingerprint=vae_fingerprint(vae))
    meta |= dict(text_encoder=str(tmp_path / "clip"), text_fingerprint=text_fingerprint(clip))
    return checkpoint.save_model(tmp_path / "sd", unet, **meta)


def test_sample_draws_a_prompt_and_refuses_bad_ones_before_sampling(saved_text_model, tmp_path, capsys):
    from diffedu import cli

    out = tmp_path / "grid.png"
    argv = ["sample", "--ckpt", str(saved_text_model), "--steps", "2", "--samples", "2", "--out", str(out)]
    assert cli.main([*argv, "--prompt", "a red car"]) == 0 and out.exists()
    assert "prompt 'a red car', guidance 3" in capsys.readouterr().out
    assert isinstance(load_pipeline(saved_text_model), TextToImage)
    for extra, said in (
        (["--prompt", "a crimson car"], "'crimson' is not in this model's vocabulary"),
        (["--prompt", " ".join(["a"] * 16)], "reads at most 15"),
        (["--prompt", "a red car", "--class", "car"], "not both"),
        (["--class", "car"], "reads prompts, not classes"),
        (["--prompt", "", "--guidance", "3"], "give one too"),
    ):
        out.unlink(missing_ok=True)
        code = cli.main([*argv, *extra])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err and not out.exists(), (extra, err)
    assert cli.main(["sample", "--ckpt", "ldm-cifar10", "--prompt", "a red car", "--out", str(out)]) == 2
    assert "no text conditioning" in capsys.readouterr().err
    assert cli.main(["adherence", "--ckpt", "ldm-cifar10", "--out", str(tmp_path / "a.json")]) == 2
    assert "not a text-to-image model" in capsys.readouterr().err


def test_a_text_model_refuses_a_changed_text_encoder(saved_text_model):
    meta = checkpoint.read_meta(saved_text_model)
    clip = pretrained.load_clip(meta["text_encoder"])
    with torch.no_grad():
        clip.text.norm.weight.add_(1)
    checkpoint.save_model(meta["text_encoder"], clip)
    with pytest.raises(CheckpointError, match="has changed since"):
        load_pipeline(saved_text_model)


@pytest.mark.parametrize(
    "argv, said",
    [
        (["sample", "--ckpt", "clip-cifar10"], "is a text encoder (a CLIP), not a diffusion model"),
        (["fid", "--ckpt", "clip-cifar10", "--samples", "2"], "is a text encoder"),
        (["zeroshot", "--ckpt", "ldm-cifar10"], "holds a unet model, not a text encoder"),
        (["train", "latent", "--vae", "clip-cifar10"], "holds a clip model, not a VAE"),
        (["train", "decoder", "--vae", "clip-cifar10"], "holds a clip model: give a VAE"),
        (["train", "consistency", "--vae", "clip-cifar10"], "tunes a flow-matching model"),
        (["train", "--recipe", "smoke-text", "--vae", "ldm-cifar10"], "not a VAE"),
        (["guidance", "--ckpt", "clip-cifar10"], "is a text encoder"),
    ],
)
def test_a_text_models_checkpoint_where_another_is_expected_is_one_line(argv, said, tmp_path, monkeypatch, capsys):
    from diffedu import cli

    monkeypatch.chdir(tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and said in err and "Traceback" not in err, err


def test_a_text_to_image_checkpoint_where_another_model_is_expected_is_one_line(saved_text_model, capsys):
    from diffedu import cli

    sd = str(saved_text_model)
    for argv, said in (
        (["guidance", "--ckpt", sd], "is not class-conditional"),
        (["train", "decoder", "--vae", sd], "holds a unet model: give a VAE"),
        (["train", "consistency", "--vae", sd], "tunes a flow-matching model"),
        (["train", "latent", "--vae", sd], "not a VAE"),
        (["zeroshot", "--ckpt", sd], "not a text encoder"),
    ):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, (argv, err)


def test_training_only_the_cross_attention_leaves_every_other_weight_as_it_was():
    from diffedu.nets import train_only_cross_attention

    unet = tiny_text_unet().train()
    before = {name: p.detach().clone() for name, p in unet.named_parameters()}
    cross = {n for n, m in unet.named_modules() if isinstance(m, CrossAttention)}
    trained = train_only_cross_attention(unet)
    assert trained == sum(p.numel() for n, p in unet.named_parameters() if n.rsplit(".", 2)[0] in cross) > 0
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    context, mask = torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool)
    for _ in range(3):
        optimizer.zero_grad()
        unet(torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), context=context, mask=mask).square().mean().backward()
        optimizer.step()
    for name, p in unet.named_parameters():
        assert torch.equal(p, before[name]) != (name.rsplit(".", 2)[0] in cross), name


def test_retrain_trains_the_text_model_on_the_clip_exported_beside_it(tiny_cifar, tmp_path, monkeypatch):
    from dataclasses import replace

    from diffedu import recipes, runs

    tiny_text = replace(recipes.get_recipe("smoke-text"), name="smoke-text-on-smoke-clip", text_encoder="smoke-clip")
    monkeypatch.setitem(recipes.RECIPES, tiny_text.name, tiny_text)
    out = tmp_path / "runs"
    assert runs.retrain([tiny_text.name, "smoke-clip"], out, data_root=str(tiny_cifar), device="cpu")  # CLIP first
    clip = pretrained.load_clip(out / "shipped" / "smoke-clip")
    run, shipped = checkpoint.read_meta(out / tiny_text.name), checkpoint.read_meta(out / "shipped" / tiny_text.name)
    assert run["text_encoder"] == str((out / "shipped" / "smoke-clip").resolve())  # it read the exported CLIP
    assert run["text_fingerprint"] == shipped["text_fingerprint"] == text_fingerprint(clip)
    assert shipped["text_encoder"] == "smoke-clip" and shipped["config"]["context_dim"] == clip.config.width
    assert "adherence" in (out / "shipped" / f"{tiny_text.name}.md").read_text()
