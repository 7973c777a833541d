"""The chapter registry: stage name -> (params section, parameter schema), and the book's table of contents.

A registry only: no stage lists this file as a dependency, so adding a chapter
here does not make the other chapters' reports stale. Each schema is a
dataclass next to the chapter's implementation (fields made with
`kexue.config.param`: default, range or choices, meaning).
"""
CHAPTERS = {
    "01_single_loss_gan": ("gan", "kexue.gan:GanParams"),
    "02_energy_based_model": ("ebm", "kexue.ebm:EbmParams"),
    "03_skip_tuning": ("skip_tuning", "kexue.diffusion:SkipTuningParams"),
    "04_adax": ("adax", "kexue.optim:AdaxParams"),
    "05_simbert": ("simbert", "kexue.simbert:SimbertParams"),
}

# Parameter sections of stages that have no chapter notebook of their own: section -> schema.
# (Chapter 03's U-Net training stage shares the chapter's `skip_tuning` section.)
STAGE_SECTIONS: dict[str, str] = {}

# Every chapter of the book, planned ones included: stage -> (short name, title, seed article on kexue.fm).
BOOK = {
    "01_single_loss_gan": ("Single-loss GAN", "A GAN trained with a single loss through stop-gradient", 6387),
    "02_energy_based_model": ("Energy-based model",
                              "An energy-based model trained with Langevin dynamics and a replay buffer", 6612),
    "03_skip_tuning": ("Skip-Tuning", "Skip-Tuning of a diffusion U-Net", 10077),
    "04_adax": ("AdaX", "AdaX: an adaptive optimizer with long-term memory", 7387),
    "05_simbert": ("SimBERT", "SimBERT: one model that retrieves and generates similar sentences", 7427),
}


def seed_url(chapter: str) -> str:
    """The chapter's seed article on Scientific Spaces."""
    return f"https://kexue.fm/archives/{BOOK[chapter][2]}"
