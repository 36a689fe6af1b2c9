//! Settings of the memory-bank and momentum-encoder methods (NPID, PIRL, MoCo), the
//! `[contrastive]` table of `config.toml`.
use crate::{Result, TrainError};
use selfsup_contrastive::{DEFAULT_BANK_MOMENTUM, DEFAULT_KEY_MOMENTUM};

/// The loss of the memory-bank methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BankLoss {
    /// NPID's noise-contrastive estimate with its normaliser fixed on the first batch.
    Nce,
    /// Cross-entropy over [positive | negatives] (InfoNCE).
    Infonce,
}

impl std::str::FromStr for BankLoss {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nce" => Ok(Self::Nce),
            "infonce" => Ok(Self::Infonce),
            _ => Err(TrainError::config(
                "contrastive.bank-loss",
                format!("unknown loss {s:?}; expected nce or infonce"),
            )),
        }
    }
}

/// What a memory-bank slot that no step has written yet stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnwrittenSlot {
    /// Nothing yet: the sample's positive is its own current feature (detached), and
    /// the slot's first write stores the feature as it is. The slot's random vector
    /// still serves as a negative until then.
    OwnFeature,
    /// Its random initial vector, which is the positive and which the first write mixes
    /// in with the bank momentum (NPID and PIRL as published).
    Random,
}

impl std::str::FromStr for UnwrittenSlot {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "own-feature" => Ok(Self::OwnFeature),
            "random" => Ok(Self::Random),
            _ => Err(TrainError::config(
                "contrastive.bank-unwritten",
                format!("unknown value {s:?}; expected own-feature or random"),
            )),
        }
    }
}

/// Settings of npid, pirl and moco.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Negatives per step: slots drawn from the memory bank (npid, pirl) or the
    /// length K of the key queue (moco).
    pub negatives: usize,
    /// Memory-bank momentum m of `slot ← normalize(m·slot + (1 − m)·feature)`.
    pub bank_momentum: f64,
    /// Loss of the memory-bank methods. InfoNCE by default: NCE with its normaliser
    /// fixed on the first batch (NPID's recipe) is estimated while the bank still holds
    /// random vectors, and on Fashion-MNIST its loss then grows without bound once the
    /// bank fills with real features (docs/methods.md).
    pub bank_loss: BankLoss,
    /// What a slot stands for before its first write: `random` (the papers' recipe) by
    /// default. `own-feature` keeps the random vectors out of the positives, but did not
    /// train NPID any better in six Fashion-MNIST epochs (docs/methods.md).
    pub bank_unwritten: UnwrittenSlot,
    /// Momentum of MoCo's key encoder, `θ_k ← m·θ_k + (1 − m)·θ_q`.
    pub key_momentum: f64,
    /// Raise the key momentum from `key_momentum` to 1 on a cosine schedule (BYOL).
    pub key_momentum_cosine: bool,
    /// Groups the shuffled key batch is split into, each normalised by batch norm on
    /// its own: MoCo's shuffling BN emulated on one device (1 turns it off).
    pub key_bn_groups: usize,
    /// PIRL's λ, the weight of the jigsaw branch's loss (1 − λ goes to the image branch).
    pub pirl_weight: f64,
    /// Cut PIRL's jigsaw tiles from a second augmented view of the image rather than
    /// from the image itself.
    pub pirl_tiles_from_view: bool,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            negatives: 4096,
            bank_momentum: DEFAULT_BANK_MOMENTUM,
            bank_loss: BankLoss::Infonce,
            bank_unwritten: UnwrittenSlot::Random,
            key_momentum: DEFAULT_KEY_MOMENTUM,
            key_momentum_cosine: false,
            key_bn_groups: 4,
            pirl_weight: 0.5,
            pirl_tiles_from_view: false,
        }
    }
}

impl ContrastiveConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// A [`TrainError::Config`] naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.negatives == 0 {
            return Err(TrainError::config(
                "contrastive.negatives",
                "must be at least 1",
            ));
        }
        if self.key_bn_groups == 0 {
            return Err(TrainError::config(
                "contrastive.key-bn-groups",
                "must be at least 1",
            ));
        }
        for (setting, v) in [
            ("contrastive.bank-momentum", self.bank_momentum),
            ("contrastive.key-momentum", self.key_momentum),
            ("contrastive.pirl-weight", self.pirl_weight),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(TrainError::config(
                    setting,
                    format!("must lie in [0, 1], got {v}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_setting() {
        ContrastiveConfig::default().validate().unwrap();
        let cases = [
            ContrastiveConfig {
                negatives: 0,
                ..Default::default()
            },
            ContrastiveConfig {
                bank_momentum: 1.5,
                ..Default::default()
            },
            ContrastiveConfig {
                key_momentum: -0.1,
                ..Default::default()
            },
            ContrastiveConfig {
                pirl_weight: f64::NAN,
                ..Default::default()
            },
            ContrastiveConfig {
                key_bn_groups: 0,
                ..Default::default()
            },
        ];
        for bad in cases {
            let msg = bad.validate().unwrap_err().to_string();
            assert!(msg.contains("contrastive."), "{msg}");
        }
        assert_eq!("infonce".parse::<BankLoss>().unwrap(), BankLoss::Infonce);
        assert!("ce".parse::<BankLoss>().is_err());
        assert_eq!(
            "random".parse::<UnwrittenSlot>().unwrap(),
            UnwrittenSlot::Random
        );
        let msg = "zero".parse::<UnwrittenSlot>().unwrap_err().to_string();
        assert!(msg.contains("contrastive.bank-unwritten"), "{msg}");
    }
}
