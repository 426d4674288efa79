//! `rmi` / `image rm`: untag and delete images no container uses.

use skiff_image::Store;

use super::*;

pub(super) fn rmi(store: &Store, a: RmiArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for i in &a.images {
        match store.remove(i, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}
