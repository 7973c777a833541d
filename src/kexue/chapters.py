"""The chapter registry: stage name -> (params section, parameter schema).

A registry only: no stage lists this file as a dependency, so adding a chapter
here does not make the other chapters' reports stale. Each schema is a
dataclass next to the chapter's implementation (fields made with
`kexue.config.param`: default, range or choices, meaning).
"""
CHAPTERS = {
    "01_single_loss_gan": ("gan", "kexue.gan:GanParams"),
    "02_energy_based_model": ("ebm", "kexue.ebm:EbmParams"),
    "04_adax": ("adax", "kexue.optim:AdaxParams"),
}
