"""The Alpaca prompt and the instruction collate's masks, exactly."""

import torch

from model.finetune.instructions import IGNORE_INDEX as X
from model.finetune.instructions import InstructionExample, PromptTemplate, instruction_collate

EOT = 99


def test_the_alpaca_prompt_as_the_book_writes_it():
    template = PromptTemplate()
    with_input = template.prompt({"instruction": "Spell it.", "input": "freind", "output": "friend"})
    assert with_input == ("Below is an instruction that describes a task. Write a response that appropriately "
                          "completes the request.\n\n### Instruction:\nSpell it.\n\n### Input:\nfreind"
                          "\n\n### Response:\n")
    assert "### Input" not in template.prompt({"instruction": "Name a color.", "input": "", "output": "red"})


def test_collate_pads_to_the_longest_and_ignores_everything_after_the_first_end_of_text():
    batch = instruction_collate([InstructionExample([1, 2, 3], 2), InstructionExample([4, 5, 6, 7, 8], 2)], EOT)
    assert batch["input_ids"].tolist() == [[1, 2, 3, EOT, EOT], [4, 5, 6, 7, 8]]
    assert batch["targets"].tolist() == [[2, 3, EOT, X, X], [5, 6, 7, 8, EOT]]


def test_collate_masks_the_prompt_when_asked():
    examples = [InstructionExample([1, 2, 3], 2), InstructionExample([4, 5, 6, 7, 8], 3)]
    batch = instruction_collate(examples, EOT, mask_prompt=True)
    # Target t predicts token t + 1: the prompt's tokens after its first are never learned.
    assert batch["targets"].tolist() == [[X, 3, EOT, X, X], [X, X, 7, 8, EOT]]


def test_collate_cuts_to_max_length():
    batch = instruction_collate([InstructionExample([1, 2, 3, 4, 5, 6], 1)], EOT, max_length=4)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4]]
    assert batch["targets"].tolist() == [[2, 3, 4, 5]]
    assert batch["input_ids"].dtype == batch["targets"].dtype == torch.long
