//! ResNet-18 and ResNet-50 (He et al. 2016, "Deep Residual Learning for Image
//! Recognition", CVPR) without the classifier, with torchvision's variable
//! names.

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;
use selfsup_kernels::{add_relu, MemoryFormat};

use crate::conv_bn::ConvBn;
use crate::encoder::{Encoder, Stem};
use crate::init::TORCHVISION_CONV_INIT;
use crate::pool::max_pool2d_padded;

/// The residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Two 3x3 convs (ResNet-18/34); expansion 1.
    Basic,
    /// 1x1, 3x3, 1x1 convs with the stride on the 3x3 (torchvision's
    /// "ResNet v1.5"); expansion 4.
    Bottleneck,
}

impl Block {
    /// Output channels of a block divided by its `planes`.
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }

    /// `(kernel, out_channels, stride)` of each conv of a block.
    fn convs(self, planes: usize, stride: usize) -> Vec<(usize, usize, usize)> {
        match self {
            Block::Basic => vec![(3, planes, stride), (3, planes, 1)],
            Block::Bottleneck => vec![(1, planes, 1), (3, planes, stride), (1, 4 * planes, 1)],
        }
    }
}

/// The architecture of a [`ResNet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// The residual block type.
    pub block: Block,
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    /// The stem.
    pub stem: Stem,
}

impl ResNetConfig {
    /// ResNet-18: basic blocks, `[2, 2, 2, 2]`, 512 features.
    pub fn resnet18(stem: Stem) -> Self {
        Self {
            block: Block::Basic,
            layers: [2, 2, 2, 2],
            stem,
        }
    }

    /// ResNet-50: bottleneck blocks, `[3, 4, 6, 3]`, 2048 features.
    pub fn resnet50(stem: Stem) -> Self {
        Self {
            block: Block::Bottleneck,
            layers: [3, 4, 6, 3],
            stem,
        }
    }

    /// The length of the feature vector.
    pub fn feature_dim(&self) -> usize {
        512 * self.block.expansion()
    }
}

/// One residual block: conv-BN(-ReLU) layers, a shortcut and a final ReLU.
#[derive(Clone, Debug)]
struct Residual {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Residual {
    /// Creates block `vb` (e.g. `layer2.0`) with variables `conv1`, `bn1`, ...
    /// and, when the shape changes, `downsample.0` (1x1 conv) and
    /// `downsample.1` (batch-norm).
    fn new(
        block: Block,
        cin: usize,
        planes: usize,
        stride: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let mut convs = Vec::new();
        let mut c = cin;
        let specs = block.convs(planes, stride);
        let last = specs.len() - 1;
        for (i, (kernel, cout, s)) in specs.into_iter().enumerate() {
            let (conv_vb, bn_vb) = (
                vb.pp(format!("conv{}", i + 1)),
                vb.pp(format!("bn{}", i + 1)),
            );
            let conv = ConvBn::new((c, cout), kernel, s, TORCHVISION_CONV_INIT, conv_vb, bn_vb)?;
            // Every conv but the last is followed by a ReLU; the last one's
            // comes after the residual sum.
            convs.push(if i < last { conv.with_relu() } else { conv });
            c = cout;
        }
        let downsample = if stride != 1 || cin != c {
            let ds = vb.pp("downsample");
            Some(ConvBn::new(
                (cin, c),
                1,
                stride,
                TORCHVISION_CONV_INIT,
                ds.pp("0"),
                ds.pp("1"),
            )?)
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool, format: MemoryFormat) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward_t(&h, train, format)?;
        }
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward_t(x, train, format)?,
            None => x.clone(),
        };
        add_relu(&h, &shortcut)
    }
}

/// A ResNet backbone (He et al. 2016) whose output is the global-average-pooled
/// feature vector (there is no `fc`).
///
/// Variable names are torchvision's state-dict keys (`conv1.weight`,
/// `bn1.running_mean`, `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
/// ...), without `num_batches_tracked` and `fc.*`. The CIFAR stem is a 3x3
/// stride-1 conv with no max-pool; the ImageNet stem is a 7x7 stride-2 conv,
/// batch-norm, ReLU and a 3x3 stride-2 max-pool with padding 1.
///
/// # Shapes
/// `(N, C, H, W)` to `(N, 512)` for ResNet-18 and `(N, 2048)` for ResNet-50.
/// The spatial size is divided by 8 (CIFAR stem) or 32 (ImageNet stem) before
/// pooling; in training mode every batch-norm needs more than one value per
/// channel, so the batch times the final spatial area must exceed 1.
#[derive(Clone, Debug)]
pub struct ResNet {
    stem: ConvBn,
    max_pool: bool,
    blocks: Vec<Residual>,
    feature_dim: usize,
}

impl ResNet {
    /// Creates the network for `in_channels`-channel images.
    ///
    /// # Errors
    /// Fails if `in_channels` or a stage's block count is zero, or if `vb`
    /// cannot provide a variable.
    pub fn new(cfg: &ResNetConfig, in_channels: usize, vb: VarBuilder) -> Result<Self> {
        if in_channels == 0 || cfg.layers.contains(&0) {
            bail!(
                "resnet needs positive in_channels ({in_channels}) and blocks per stage ({:?})",
                cfg.layers
            )
        }
        let (kernel, stride, max_pool) = match cfg.stem {
            Stem::Cifar => (3, 1, false),
            Stem::ImageNet => (7, 2, true),
        };
        let stem = ConvBn::new(
            (in_channels, 64),
            kernel,
            stride,
            TORCHVISION_CONV_INIT,
            vb.pp("conv1"),
            vb.pp("bn1"),
        )?
        .with_relu();
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, &count) in cfg.layers.iter().enumerate() {
            let planes = 64 << stage;
            let layer = vb.pp(format!("layer{}", stage + 1));
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(Residual::new(cfg.block, cin, planes, stride, &layer.pp(i))?);
                cin = planes * cfg.block.expansion();
            }
        }
        Ok(Self {
            stem,
            max_pool,
            blocks,
            feature_dim: cfg.feature_dim(),
        })
    }
}

impl Encoder for ResNet {
    fn forward_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let format = MemoryFormat::native(x);
        let mut h = self.stem.forward_t(&format.from_nchw(x)?, train, format)?;
        if self.max_pool {
            // The max-pool kernel is channels first.
            let pooled = max_pool2d_padded(&format.to_nchw(&h)?, 3, 2, 1)?;
            h = format.from_nchw(&pooled)?;
        }
        for block in &self.blocks {
            h = block.forward_t(&h, train, format)?;
        }
        format.to_nchw(&h)
    }

    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::{assert_trainable_grads, random_input, var_names};
    use crate::{seeded_var_builder, EncoderKind};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// torchvision's `resnet18().state_dict().keys()`, without the
    /// `*.num_batches_tracked` counters and `fc.weight`/`fc.bias`.
    const RESNET18_KEYS: [&str; 100] = [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.bn1.bias",
        "layer1.0.bn1.running_mean",
        "layer1.0.bn1.running_var",
        "layer1.0.conv2.weight",
        "layer1.0.bn2.weight",
        "layer1.0.bn2.bias",
        "layer1.0.bn2.running_mean",
        "layer1.0.bn2.running_var",
        "layer1.1.conv1.weight",
        "layer1.1.bn1.weight",
        "layer1.1.bn1.bias",
        "layer1.1.bn1.running_mean",
        "layer1.1.bn1.running_var",
        "layer1.1.conv2.weight",
        "layer1.1.bn2.weight",
        "layer1.1.bn2.bias",
        "layer1.1.bn2.running_mean",
        "layer1.1.bn2.running_var",
        "layer2.0.conv1.weight",
        "layer2.0.bn1.weight",
        "layer2.0.bn1.bias",
        "layer2.0.bn1.running_mean",
        "layer2.0.bn1.running_var",
        "layer2.0.conv2.weight",
        "layer2.0.bn2.weight",
        "layer2.0.bn2.bias",
        "layer2.0.bn2.running_mean",
        "layer2.0.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer2.0.downsample.1.bias",
        "layer2.0.downsample.1.running_mean",
        "layer2.0.downsample.1.running_var",
        "layer2.1.conv1.weight",
        "layer2.1.bn1.weight",
        "layer2.1.bn1.bias",
        "layer2.1.bn1.running_mean",
        "layer2.1.bn1.running_var",
        "layer2.1.conv2.weight",
        "layer2.1.bn2.weight",
        "layer2.1.bn2.bias",
        "layer2.1.bn2.running_mean",
        "layer2.1.bn2.running_var",
        "layer3.0.conv1.weight",
        "layer3.0.bn1.weight",
        "layer3.0.bn1.bias",
        "layer3.0.bn1.running_mean",
        "layer3.0.bn1.running_var",
        "layer3.0.conv2.weight",
        "layer3.0.bn2.weight",
        "layer3.0.bn2.bias",
        "layer3.0.bn2.running_mean",
        "layer3.0.bn2.running_var",
        "layer3.0.downsample.0.weight",
        "layer3.0.downsample.1.weight",
        "layer3.0.downsample.1.bias",
        "layer3.0.downsample.1.running_mean",
        "layer3.0.downsample.1.running_var",
        "layer3.1.conv1.weight",
        "layer3.1.bn1.weight",
        "layer3.1.bn1.bias",
        "layer3.1.bn1.running_mean",
        "layer3.1.bn1.running_var",
        "layer3.1.conv2.weight",
        "layer3.1.bn2.weight",
        "layer3.1.bn2.bias",
        "layer3.1.bn2.running_mean",
        "layer3.1.bn2.running_var",
        "layer4.0.conv1.weight",
        "layer4.0.bn1.weight",
        "layer4.0.bn1.bias",
        "layer4.0.bn1.running_mean",
        "layer4.0.bn1.running_var",
        "layer4.0.conv2.weight",
        "layer4.0.bn2.weight",
        "layer4.0.bn2.bias",
        "layer4.0.bn2.running_mean",
        "layer4.0.bn2.running_var",
        "layer4.0.downsample.0.weight",
        "layer4.0.downsample.1.weight",
        "layer4.0.downsample.1.bias",
        "layer4.0.downsample.1.running_mean",
        "layer4.0.downsample.1.running_var",
        "layer4.1.conv1.weight",
        "layer4.1.bn1.weight",
        "layer4.1.bn1.bias",
        "layer4.1.bn1.running_mean",
        "layer4.1.bn1.running_var",
        "layer4.1.conv2.weight",
        "layer4.1.bn2.weight",
        "layer4.1.bn2.bias",
        "layer4.1.bn2.running_mean",
        "layer4.1.bn2.running_var",
    ];

    fn build(kind: &str, seed: u64) -> Result<(VarMap, Box<dyn Encoder>)> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let kind: EncoderKind = kind.parse().map_err(candle_core::Error::wrap)?;
        let net = kind.build(3, vb)?;
        Ok((varmap, net))
    }

    fn shape_of(varmap: &VarMap, name: &str) -> Result<Vec<usize>> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        match vars.get(name) {
            Some(v) => Ok(v.dims().to_vec()),
            None => bail!("no variable {name}"),
        }
    }

    #[test]
    fn resnet18_names_are_torchvision_keys() -> Result<()> {
        for kind in ["resnet18", "resnet18-cifar"] {
            let (varmap, _) = build(kind, 0)?;
            let mut want: Vec<String> = RESNET18_KEYS.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(var_names(&varmap)?, want, "{kind}");
        }
        let (varmap, _) = build("resnet18", 0)?;
        assert_eq!(shape_of(&varmap, "conv1.weight")?, [64, 3, 7, 7]);
        assert_eq!(
            shape_of(&varmap, "layer3.0.downsample.0.weight")?,
            [256, 128, 1, 1]
        );
        let (varmap, _) = build("resnet18-cifar", 0)?;
        assert_eq!(shape_of(&varmap, "conv1.weight")?, [64, 3, 3, 3]);
        Ok(())
    }

    #[test]
    fn resnet50_names_and_shapes_follow_torchvision() -> Result<()> {
        let (varmap, _) = build("resnet50", 0)?;
        let names = var_names(&varmap)?;
        // torchvision's resnet50 has 320 keys: 53 batch-norms with 5 entries
        // (one being num_batches_tracked), 53 convs and fc.weight/fc.bias.
        assert_eq!(names.len(), 53 * 4 + 53);
        assert_eq!(shape_of(&varmap, "layer1.0.conv3.weight")?, [256, 64, 1, 1]);
        assert_eq!(
            shape_of(&varmap, "layer1.0.downsample.0.weight")?,
            [256, 64, 1, 1]
        );
        assert_eq!(
            shape_of(&varmap, "layer2.0.conv2.weight")?,
            [128, 128, 3, 3]
        );
        assert_eq!(shape_of(&varmap, "layer4.2.bn3.running_var")?, [2048]);
        assert!(!names.iter().any(|n| n.starts_with("layer2.1.downsample")));
        Ok(())
    }

    #[test]
    fn bottleneck_strides_on_the_3x3_conv() {
        // torchvision's "ResNet v1.5": conv1 1x1 s1, conv2 3x3 s2, conv3 1x1 s1.
        let convs = Block::Bottleneck.convs(128, 2);
        assert_eq!(convs, vec![(1, 128, 1), (3, 128, 2), (1, 512, 1)]);
        assert_eq!(Block::Basic.convs(64, 2), vec![(3, 64, 2), (3, 64, 1)]);
    }

    #[test]
    fn output_shapes_for_both_stems() -> Result<()> {
        let cases = [
            ("resnet18-cifar", [2, 3, 32, 32], 512),
            ("resnet18", [2, 3, 32, 32], 512),
            ("resnet50-cifar", [2, 3, 16, 16], 2048),
            ("resnet50", [2, 3, 32, 32], 2048),
        ];
        for (kind, shape, dim) in cases {
            let (_, net) = build(kind, 0)?;
            assert_eq!(net.feature_dim(), dim);
            let y = net.forward_t(&random_input(&shape, 0)?, false)?;
            assert_eq!(y.dims(), &[2, dim], "{kind}");
        }
        Ok(())
    }

    #[test]
    fn same_seed_same_weights() -> Result<()> {
        let weights = |seed| -> Result<Vec<Vec<f32>>> {
            let (varmap, _) = build("resnet18-cifar", seed)?;
            let vars = varmap
                .data()
                .lock()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|n| vars[n].as_tensor().flatten_all()?.to_vec1())
                .collect()
        };
        let (a, b, c) = (weights(7)?, weights(7)?, weights(8)?);
        let bits =
            |w: &Vec<Vec<f32>>| -> Vec<u32> { w.iter().flatten().map(|v| v.to_bits()).collect() };
        assert_eq!(bits(&a), bits(&b));
        assert_ne!(bits(&a), bits(&c));
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient_cifar_stem() -> Result<()> {
        let (varmap, net) = build("resnet18-cifar", 1)?;
        let y = net.forward_t(&random_input(&[2, 3, 16, 16], 2)?, true)?;
        assert_eq!(assert_trainable_grads(&varmap, &y)?, 60);
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient_imagenet_stem() -> Result<()> {
        let (varmap, net) = build("resnet18", 1)?;
        let y = net.forward_t(&random_input(&[2, 3, 64, 64], 3)?, true)?;
        assert_eq!(assert_trainable_grads(&varmap, &y)?, 60);
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient_resnet50() -> Result<()> {
        let (varmap, net) = build("resnet50", 1)?;
        let y = net.forward_t(&random_input(&[2, 3, 64, 64], 4)?, true)?;
        assert_eq!(assert_trainable_grads(&varmap, &y)?, 53 * 3);
        Ok(())
    }
}
