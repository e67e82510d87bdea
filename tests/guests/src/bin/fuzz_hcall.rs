#![no_std]
#![no_main]
basalt_test_guests::entry!(main);
fn main(_c: &str) -> u32 {
    basalt_test_guests::pass()
}
