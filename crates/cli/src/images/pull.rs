//! `pull`: an image from a registry, admitted by the plugins.

use anyhow::bail;
use skiff_image::registry::{self};
use skiff_image::{Reference, Store};

use super::*;

pub(super) fn pull(store: &Store, a: PullArgs) -> anyhow::Result<i32> {
    if a.platform != "linux/amd64" {
        bail!("only --platform linux/amd64 is supported");
    }
    let r = Reference::parse(&a.name)?;
    let shown = familiar(&r);
    if !a.quiet {
        println!(
            "{}: Pulling from {}",
            r.tag.as_deref().unwrap_or(&r.manifest_ref()),
            r.familiar_name()
        );
    }
    let pulled = match registry::pull(store, &r, &a.registry.options(a.quiet)) {
        Ok(p) => p,
        Err(e @ skiff_image::Error::Registry { .. }) if r.familiar_name() == "busybox" => {
            return Err(anyhow::Error::new(e).context(
                "no registry reachable for busybox; build the offline starter image with `skiff image build-busybox`",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // Admission by the plugins: a denied image does not stay in the store.
    if let Err(e) = skiff_engine::policy::get()?.admit_image(&r.to_string(), &pulled.image) {
        let _ = store.remove(&r.to_string(), true);
        return Err(e.into());
    }
    if a.quiet {
        println!("{shown}");
    } else {
        println!("Digest: {}", pulled.digest);
        if pulled.layers_fetched == 0 {
            println!("Status: Image is up to date for {shown}");
        } else {
            println!("Status: Downloaded newer image for {shown}");
        }
        println!("{r}");
    }
    Ok(0)
}
