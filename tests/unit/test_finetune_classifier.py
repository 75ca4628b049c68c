"""The classification head reads the last real token; metrics come from the confusion matrix."""

import numpy as np
import pytest
import torch

from model.config import preset
from model.finetune.classifier import GPTClassifier
from model.finetune.labeled import TokenizedExample, classification_collate, read_labeled
from model.finetune.metrics import classification_metrics, confusion_matrix
from model.gpt import GPT


def classifier():
    torch.manual_seed(0)
    return GPTClassifier(GPT(preset("tiny")), num_classes=3).eval()


def test_padding_does_not_change_the_result():
    model = classifier()
    texts = [[5, 9, 13, 2], [7, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    alone = torch.cat([model(torch.tensor([tokens]), torch.tensor([len(tokens)])) for tokens in texts])
    for pad_token in (0, 511):
        batch = classification_collate([TokenizedExample(tokens, 0) for tokens in texts], pad_token)
        assert batch["input_ids"].shape == (3, 9)
        torch.testing.assert_close(model(batch["input_ids"], batch["lengths"]), alone, rtol=1e-5, atol=1e-5)


def test_the_head_reads_the_last_real_token_not_the_last_position():
    model = classifier()
    tokens = torch.tensor([[5, 9, 13, 2, 0, 0]])
    assert not torch.allclose(model(tokens, torch.tensor([4])), model(tokens, torch.tensor([6])))


def test_metrics_from_the_confusion_matrix():
    matrix = confusion_matrix(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 0]), 2)
    assert matrix.tolist() == [[2, 1], [1, 1]]
    metrics = classification_metrics(matrix)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["recall"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_labeled_files_in_each_format_give_the_same_examples(tmp_path):
    (tmp_path / "a.tsv").write_text('spam\tWIN "now"\nham\thi there\n')
    (tmp_path / "b.csv").write_text('message,kind\n"WIN ""now""",spam\nhi there,ham\n')
    (tmp_path / "c.jsonl").write_text('{"text": "WIN \\"now\\"", "y": "spam"}\n{"text": "hi there", "y": "ham"}\n')
    expected = ([("WIN \"now\"", 1), ("hi there", 0)], ["ham", "spam"])
    for examples, labels in [read_labeled(tmp_path / "a.tsv", "text", "label", ["label", "text"]),
                             read_labeled(tmp_path / "b.csv", "message", "kind"),
                             read_labeled(tmp_path / "c.jsonl", "text", "y")]:
        assert ([(e.text, e.label) for e in examples], labels) == expected
    with pytest.raises(ValueError, match="no column 'label'"):
        read_labeled(tmp_path / "c.jsonl", "text", "label")



@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Classifier tasks on a 3-ham, 1-spam file, all of it in the train split: balanced by
    downsampling, and by class weights."""
    from model.finetune.classify import ClassifierConfig, ClassifierTask
    from pipeline.config import validate

    path = tmp_path_factory.mktemp("data") / "sms.tsv"
    path.write_text("ham\thi\nham\tok then\nham\tsee you\nspam\tWIN cash now\n")
    return {balance: ClassifierTask(validate(ClassifierConfig, {
        "model": {"preset": "tiny"}, "trainable": {"last_blocks": 1},
        "data": {"path": str(path), "fractions": [1.0, 0.0, 0.0], "balance": balance},
        "tracking": {"enabled": False},
    })) for balance in ("downsample", "class_weights")}


def test_class_weights_are_inverse_frequency_averaging_one(tasks):
    assert tasks["class_weights"].class_weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert len(tasks["class_weights"].splits().train) == 4
    assert tasks["downsample"].class_weights is None
    assert len(tasks["downsample"].splits().train) == 2  # one ham kept per spam


def test_the_last_block_the_final_norm_and_the_head_train(tasks):
    model = tasks["downsample"].build_model()
    trainable = {name.split(".")[1] if name.startswith("gpt.") else name.split(".")[0]
                 for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"blocks", "final_norm", "head"}
    assert not any(p.requires_grad for p in model.gpt.blocks[0].parameters())
    assert all(p.requires_grad for p in model.gpt.blocks[1].parameters())
